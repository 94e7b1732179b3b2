"""The transform's DuckDB is bounded (no temp directory, memory, threads, time per batch), and its data
errors describe values instead of echoing them (shared.redaction)."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from shared.errors import DataError, is_transient
from shared.policy import PolicySettings
from shared.redaction import describe_text, scrub
from shared.spec import parse_spec
from shared.transform.engine import TransformEngine
from shared.transform.errors import ExpressionError, SandboxLimitError
from shared.transform.expressions import SandboxLimits

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-value-from-a-file"


def steps(*raw: dict) -> list:
    return parse_spec(
        {
            "name": "p",
            "source": {"type": "event"},
            "transforms": list(raw),
            "destination": {"type": "kafka", "topic": "t"},
        }
    ).transforms


def test_the_sandbox_has_no_temp_directory_and_the_policys_memory_and_threads() -> None:
    limits = SandboxLimits(memory_limit="256MB", threads=1, timeout_s=30)
    query = (
        "SELECT current_setting('temp_directory') AS tmp, current_setting('memory_limit') AS mem,"
        " current_setting('threads') AS threads, current_setting('max_temp_directory_size') AS tmp_max"
        " FROM batch LIMIT 1"
    )
    with TransformEngine(steps({"op": "sql", "query": query}), limits=limits) as engine:
        (row,) = engine.apply(pa.table({"a": [1]})).to_pylist()
    assert row["tmp"] == "" and row["threads"] == 1 and row["tmp_max"] == "0 bytes"
    assert row["mem"].startswith("244") or row["mem"].startswith("256")  # DuckDB shows MiB


def test_the_limits_cannot_be_set_back_from_a_step() -> None:
    with TransformEngine(
        steps({"op": "derive", "column": "x", "expr": "1"}), limits=SandboxLimits()
    ) as engine:
        engine.apply(pa.table({"a": [1]}))
        for setting in ("SET memory_limit = '100GB'", "SET threads = 64", "SET temp_directory = '/tmp'"):
            with pytest.raises(Exception, match=r"(?i)locked|disabled|configuration"):
                engine._conn.execute(setting)  # what a step's SQL would reach, were it not a SELECT


def test_a_batch_that_runs_too_long_is_interrupted_with_a_terminal_error() -> None:
    slow = {"op": "derive", "column": "n", "expr": "(SELECT count(*) FROM range(100000000000) r)"}
    with TransformEngine(steps(slow), limits=SandboxLimits(timeout_s=0.5)) as engine:
        started = time.monotonic()
        with pytest.raises(SandboxLimitError, match=r"took longer than 0\.5 s") as info:
            engine.apply(pa.table({"a": [1]}))
        assert time.monotonic() - started < 10
        assert isinstance(info.value, DataError) and not is_transient(info.value)
        # The connection is usable for the next batch.
        quick = TransformEngine(
            steps({"op": "derive", "column": "b", "expr": "a + 1"}), limits=SandboxLimits()
        )
        assert quick.apply(pa.table({"a": [1]})).column("b").to_pylist() == [2]
        quick.close()


def test_a_batch_that_needs_more_memory_than_allowed_fails_terminally() -> None:
    hungry = {"op": "sql", "query": "SELECT list(range) AS l FROM range(50000000) GROUP BY range % 3"}
    engine = TransformEngine(steps(hungry), limits=SandboxLimits(memory_limit="64MB"))
    with engine, pytest.raises(SandboxLimitError, match="more memory"):
        engine.apply(pa.table({"a": [1]}))


def test_the_default_limits_come_from_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_POLICY_TRANSFORM_THREADS", "1")
    monkeypatch.setenv("AOETL_POLICY_TRANSFORM_TIMEOUT_S", "7")
    assert SandboxLimits.from_policy(PolicySettings()) == SandboxLimits("1GB", 1, 7.0)
    query = "SELECT current_setting('threads') AS t FROM batch"
    with TransformEngine(steps({"op": "sql", "query": query})) as engine:
        assert engine.apply(pa.table({"a": [1]})).column("t").to_pylist() == [1]


def test_a_failing_cast_inside_an_expression_does_not_echo_the_value() -> None:
    cast = {"op": "derive", "column": "n", "expr": "CAST(name AS INTEGER)"}
    engine = TransformEngine(steps(cast), limits=SandboxLimits())
    with engine, pytest.raises(ExpressionError) as info:
        engine.apply(pa.table({"name": ["1", SECRET]}))
    message = str(info.value)
    assert SECRET not in message and "s3cr3t" not in message
    assert "<24 characters: letters, digits, symbols>" in message and "transforms[0] (derive)" in message


def test_a_failing_cast_step_describes_its_bad_values() -> None:
    cast = {"op": "cast", "columns": {"amount": "float64", "day": "date"}}
    with TransformEngine(steps(cast), limits=SandboxLimits()) as engine, pytest.raises(DataError) as info:
        engine.apply(pa.table({"amount": ["1.5", SECRET], "day": ["2024-01-01", "2024-01-02"]}))
    assert SECRET not in str(info.value) and "<24 characters" in str(info.value)


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ("CSV parse error: Expected 2 columns, got 3: root,pw123,x", "pw123", "Expected 2 columns, got 3"),
        (
            "In CSV column #0: CSV conversion error to int64: invalid value 'pw123'",
            "pw123",
            "invalid value <5",
        ),
        ("Conversion Error: Could not convert string 'O'Reilly pw123' to INT32", "pw123", "to INT32"),
        ('invalid input syntax for type integer: "pw123"', "pw123", "for type integer: <5 characters"),
        ('value "99999999999" is out of range for type integer', "99999999999", "out of range"),
        ("duplicate key DETAIL: Key (id)=(pw123) already exists.", "pw123", "Key (id)=(<values not shown>)"),
        ('column "amount" is of type integer', "nothing", 'column "amount"'),
        ("an unbalanced 'pw123 quote", "pw123", "an unbalanced"),
    ],
)
def test_scrub_describes_values_and_keeps_the_rest(text: str, hidden: str, kept: str) -> None:
    scrubbed = scrub(text)
    assert hidden not in scrubbed and kept in scrubbed


def test_scrub_caps_the_length() -> None:
    assert len(scrub("x" * 10_000)) == 400


def test_describe_text_tells_shape_not_content() -> None:
    assert describe_text("pa55 word!") == "<10 characters: letters, digits, spaces, symbols>"
    assert describe_text("") == "<0 characters>"
    assert describe_text("7") == "<1 character: digits>"
