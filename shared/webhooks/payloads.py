"""JSON bodies of webhook deliveries, decoded within limits.

A delivery's body is signed, but a signature only says who sent it, not that it is sane: a sender's bug, a
leaked secret or a hostile integration can sign anything. ``decode_json`` turns every body the standard
decoder would choke on, or that would break a later step, into a ``PayloadLimitError`` with a reason (the
gateway answers 400), never into an unexpected exception (a 500):

* nesting deeper than ``MAX_DEPTH`` containers (64: real senders stay below 10; the standard decoder itself
  raises ``RecursionError`` near 1,000, and every later reader of the payload walks it again);
* a number literal longer than ``MAX_NUMBER_CHARS`` characters (Python refuses integers over 4,300 digits
  with a bare ``ValueError``, and a long one costs quadratic time to convert) or out of a double's range;
* ``NaN`` / ``Infinity``, which are not JSON (RFC 8259) though Python's decoder takes them;
* an object that repeats a key: decoders disagree on which copy wins, so the gateway's trigger rules and a
  downstream reader could see different values in the same signed body;
* a string that is not valid Unicode (a lone surrogate escape such as ``"\\ud800"``), which could not be
  written to an Avro string later (a trigger parameter, a Stripe event id).

The standard library's C decoder does the parsing (fast, and the reference for what JSON is); the limits
are its hooks plus one iterative walk of the result, which no depth can overflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100


class PayloadLimitError(ValueError):
    """The body is not JSON, or is JSON outside the limits above; the message says which, without quoting
    the body."""


def decode_json(body: bytes, *, max_depth: int = MAX_DEPTH, max_number_chars: int = MAX_NUMBER_CHARS) -> Any:
    """The decoded body, or ``PayloadLimitError``."""

    def number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        def parse(literal: str) -> Any:
            if len(literal) > max_number_chars:
                raise PayloadLimitError(f"a number literal is longer than {max_number_chars} characters")
            value = convert(literal)
            if isinstance(value, float) and not math.isfinite(value):
                raise PayloadLimitError("a number is out of the range of a double")
            return value

        return parse

    def constant(name: str) -> Any:
        raise PayloadLimitError(f"{name} is not a JSON value")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise PayloadLimitError("an object repeats a key")
        return obj

    try:
        value = json.loads(
            body,
            parse_int=number(int),
            parse_float=number(float),
            parse_constant=constant,
            object_pairs_hook=unique_keys,
        )
    except PayloadLimitError:
        raise
    except RecursionError:
        raise PayloadLimitError(f"the body nests deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise PayloadLimitError("the body is not UTF-8, UTF-16 or UTF-32 text") from None
    except json.JSONDecodeError as exc:
        # msg, line and column only: exc's own text is the same, but never the document
        raise PayloadLimitError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # any other conversion the decoder refuses
        raise PayloadLimitError(f"not valid JSON: {type(exc).__name__}") from None
    _check_shape(value, max_depth)
    return value


def _check_shape(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                raise PayloadLimitError(f"the body nests deeper than {max_depth} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadLimitError("a string holds an unpaired surrogate escape (not Unicode text)") from None
