"""JSON bodies within limits (``shared.webhooks.payloads``): every hostile body is a ``PayloadLimitError``
with a reason, never another exception, and every ordinary one decodes as the standard decoder would."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.webhooks.payloads import MAX_DEPTH, PayloadLimitError, decode_json

pytestmark = pytest.mark.unit


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (nested(MAX_DEPTH + 1), "nests deeper than 64"),
        (nested(100_000), "nests deeper than 64"),  # the standard decoder alone raises RecursionError
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nests deeper than 64"),
        (b"1" * 5000, "number literal is longer than 100"),  # Python alone: ValueError (4300 digits)
        (b'{"n": ' + b"9" * 101 + b"}", "number literal is longer than 100"),
        (b"[1e999]", "out of the range of a double"),
        (b"[-1e999]", "out of the range of a double"),
        (b"NaN", "NaN is not a JSON value"),
        (b'{"x": Infinity}', "Infinity is not a JSON value"),
        (b'{"a": 1, "a": 2}', "repeats a key"),
        (b'{"a": "\\ud800"}', "unpaired surrogate"),
        (b'{"\\udfff": 1}', "unpaired surrogate"),
        (b"{oops", "not valid JSON: Expecting property name"),
        (b"", "not valid JSON: Expecting value"),
        (b"\xff\xfe\xfd", "not UTF-8, UTF-16 or UTF-32"),
        (b"\x80abc", "not UTF-8"),
    ],
)
def test_hostile_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadLimitError, match=reason):
        decode_json(body)


def test_the_limits_are_inclusive_and_ordinary_json_decodes() -> None:
    assert decode_json(nested(MAX_DEPTH)) is not None
    assert decode_json(b'{"n": ' + b"9" * 100 + b"}") == {"n": int("9" * 100)}
    assert decode_json('{"é": "ü \\ud83d\\ude00", "x": [1, 2.5, null, true]}'.encode()) == {
        "é": "ü 😀",
        "x": [1, 2.5, None, True],
    }
    assert decode_json(b'"a' + b"x" * 500_000 + b'"') == "a" + "x" * 500_000  # long strings are fine


def test_the_reason_never_quotes_the_body() -> None:
    secret_looking = b'{"token": "sk_live_abcdef", oops}'
    with pytest.raises(PayloadLimitError) as refused:
        decode_json(secret_looking)
    assert "sk_live" not in str(refused.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_what_the_standard_encoder_writes_decodes_the_same(value: Any) -> None:
    assert decode_json(json.dumps(value).encode()) == value


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_decode_or_are_refused_never_crash(body: bytes) -> None:
    with contextlib.suppress(PayloadLimitError):
        decode_json(body)


@given(
    st.lists(
        st.sampled_from(["[", "]", '{"k":', "}", ",", "1", '"\\ud800"', "1e400", "NaN", ":"]), max_size=200
    )
)
@settings(max_examples=500, deadline=None)
def test_bracket_soup_is_refused_or_decoded_never_crashes(tokens: list[str]) -> None:
    with contextlib.suppress(PayloadLimitError):
        decode_json("".join(tokens).encode())
