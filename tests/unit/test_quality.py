"""QualityChecker: every rule on generated data against plain-Python verdicts; quarantine attribution;
warn/fail; null handling; run-level row_count."""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

import pyarrow as pa
import pytest
from pydantic import TypeAdapter

from shared.errors import ConfigurationError
from shared.spec.quality import OnFail, QualityRule
from shared.transform.errors import InvalidRuleError, UnknownColumnError
from shared.transform.quality import SAMPLE_ROWS, QualityChecker, check_row_count

pytestmark = pytest.mark.unit

_RULES = TypeAdapter(list[QualityRule])
ROWS = 3_000


def rules(*raw: dict[str, Any]) -> list[QualityRule]:
    return _RULES.validate_python(list(raw))


def generated(rows: int = ROWS, seed: int = 11) -> pa.Table:
    rng = random.Random(seed)

    def maybe(value: Any, p_null: float = 0.08) -> Any:
        return None if rng.random() < p_null else value

    return pa.table(
        {
            "id": pa.array([maybe(rng.randrange(rows * 2)) for _ in range(rows)], pa.int64()),
            "region": pa.array([maybe(rng.choice(["eu", "us", "apac"])) for _ in range(rows)]),
            "amount": pa.array(
                [
                    maybe(
                        rng.choice([rng.uniform(-50, 1100), math.nan])
                        if rng.random() < 0.02
                        else rng.uniform(-50, 1100)
                    )
                    for _ in range(rows)
                ],
                pa.float64(),
            ),
            "email": pa.array(
                [maybe(rng.choice(["a@x.org", "b@y.com", "broken", "c@z"])) for _ in range(rows)]
            ),
            "status": pa.array([maybe(rng.choice(["new", "paid", "void", "PAID"])) for _ in range(rows)]),
            "code": pa.array([maybe(rng.randrange(5)) for _ in range(rows)], pa.int32()),
        }
    )


def nan_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN != NaN; compare it as a marker instead."""
    return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]


def violation_of(outcome: Any, name: str) -> Any:
    [found] = [v for v in outcome.violations if v.rule == name]
    return found


# ------------------------------------------------------------------------------ every rule (warn)
def expected_bad(rows: list[dict[str, Any]], predicate: Any) -> int:
    return sum(1 for r in rows if predicate(r))


def test_not_null_counts_rows_with_any_null() -> None:
    table = generated()
    outcome = QualityChecker(
        rules({"rule": "not_null", "columns": ["id", "region"], "on_fail": "warn"})
    ).check(table)
    expected = expected_bad(table.to_pylist(), lambda r: r["id"] is None or r["region"] is None)
    v = violation_of(outcome, "not_null:id,region")
    assert v.failed_rows == expected > 0
    assert v.reason == f"{expected} rows with null in id, region"
    assert outcome.kept is table and not outcome.fail


def test_unique_flags_every_row_of_a_duplicated_key_ignoring_null_keys() -> None:
    table = generated()
    outcome = QualityChecker(
        rules({"rule": "unique", "columns": ["region", "code"], "on_fail": "warn"})
    ).check(table)
    rows = table.to_pylist()
    counts: dict[tuple[Any, Any], int] = {}
    for r in rows:
        if r["region"] is not None and r["code"] is not None:
            counts[(r["region"], r["code"])] = counts.get((r["region"], r["code"]), 0) + 1
    expected = sum(n for n in counts.values() if n > 1)
    assert violation_of(outcome, "unique:region,code").failed_rows == expected > 0


def test_unique_single_column_with_nulls() -> None:
    table = pa.table({"k": [1, 2, 2, None, None, 3, 3, 3]})
    outcome = QualityChecker(rules({"rule": "unique", "columns": ["k"], "on_fail": "quarantine"})).check(
        table
    )
    assert outcome.kept.column("k").to_pylist() == [1, None, None]
    [(v, rows)] = outcome.quarantined
    assert rows.column("k").to_pylist() == [2, 2, 3, 3, 3] and v.failed_rows == 5


def test_range_ignores_nulls_and_treats_nan_as_outside() -> None:
    table = generated()
    outcome = QualityChecker(
        rules({"rule": "range", "column": "amount", "min": 0, "max": 1000, "on_fail": "warn"})
    ).check(table)
    expected = expected_bad(
        table.to_pylist(),
        lambda r: r["amount"] is not None and (math.isnan(r["amount"]) or not 0 <= r["amount"] <= 1000),
    )
    v = violation_of(outcome, "range:amount")
    assert v.failed_rows == expected > 0
    assert v.reason == f"{expected} rows with amount outside [0, 1000]"


def test_range_with_one_bound_on_an_integer_column() -> None:
    table = generated()
    outcome = QualityChecker(rules({"rule": "range", "column": "code", "min": 2, "on_fail": "warn"})).check(
        table
    )
    expected = expected_bad(table.to_pylist(), lambda r: r["code"] is not None and r["code"] < 2)
    v = violation_of(outcome, "range:code")
    assert v.failed_rows == expected and v.reason.endswith("outside [2, +inf]")


def test_regex_searches_the_text_and_ignores_nulls() -> None:
    table = generated()
    pattern = r"^[a-z]+@[a-z]+\.(org|com)$"
    outcome = QualityChecker(
        rules({"rule": "regex", "column": "email", "pattern": pattern, "on_fail": "warn"})
    ).check(table)
    expected = expected_bad(
        table.to_pylist(), lambda r: r["email"] is not None and not re.search(pattern, r["email"])
    )
    assert violation_of(outcome, "regex:email").failed_rows == expected > 0


def test_regex_on_a_number_column_uses_its_text() -> None:
    outcome = QualityChecker(
        rules({"rule": "regex", "column": "n", "pattern": "^[0-4]$", "on_fail": "warn"})
    ).check(pa.table({"n": [1, 5, 12, None]}))
    assert outcome.violations[0].failed_rows == 2


def test_regex_the_engine_cannot_run_is_refused_up_front() -> None:
    with pytest.raises(InvalidRuleError, match="quality\\[0\\]"):
        QualityChecker(rules({"rule": "regex", "column": "s", "pattern": r"(a)\1"}))


def test_accepted_values_is_case_sensitive_and_ignores_nulls() -> None:
    table = generated()
    outcome = QualityChecker(
        rules({"rule": "accepted_values", "column": "status", "values": ["new", "paid"], "on_fail": "warn"})
    ).check(table)
    expected = expected_bad(
        table.to_pylist(), lambda r: r["status"] is not None and r["status"] not in {"new", "paid"}
    )
    v = violation_of(outcome, "accepted_values:status")
    assert v.failed_rows == expected > 0 and "not in ['new', 'paid']" in v.reason


def test_accepted_values_on_integers_compares_text() -> None:
    outcome = QualityChecker(
        rules({"rule": "accepted_values", "column": "code", "values": ["0", "1"], "on_fail": "warn"})
    ).check(generated())
    rows = generated().to_pylist()
    assert violation_of(outcome, "accepted_values:code").failed_rows == expected_bad(
        rows, lambda r: r["code"] is not None and r["code"] not in (0, 1)
    )


# ------------------------------------------------------------------------------ on_fail behaviour
def test_quarantine_assigns_each_row_to_the_first_rule_that_caught_it() -> None:
    table = generated()
    checker = QualityChecker(
        rules(
            {"rule": "not_null", "columns": ["id"], "on_fail": "quarantine"},
            {"rule": "range", "column": "amount", "min": 0, "max": 1000, "on_fail": "quarantine"},
            {
                "rule": "accepted_values",
                "column": "status",
                "values": ["new", "paid"],
                "on_fail": "quarantine",
            },
        )
    )
    outcome = checker.check(table)

    def first_rule(r: dict[str, Any]) -> int | None:
        if r["id"] is None:
            return 0
        if r["amount"] is not None and (math.isnan(r["amount"]) or not 0 <= r["amount"] <= 1000):
            return 1
        if r["status"] is not None and r["status"] not in {"new", "paid"}:
            return 2
        return None

    rows = table.to_pylist()
    buckets: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}
    kept: list[dict[str, Any]] = []
    for r in rows:
        which = first_rule(r)
        (kept if which is None else buckets[which]).append(r)

    assert [v.rule for v, _ in outcome.quarantined] == [
        "not_null:id",
        "range:amount",
        "accepted_values:status",
    ]
    for (v, quarantined), expected in zip(outcome.quarantined, buckets.values(), strict=True):
        assert nan_safe(quarantined.to_pylist()) == nan_safe(expected)
        assert v.failed_rows == len(expected) > 0 and v.on_fail is OnFail.QUARANTINE
        assert quarantined.schema == table.schema
    assert nan_safe(outcome.kept.to_pylist()) == nan_safe(kept)
    assert outcome.kept.num_rows + sum(t.num_rows for _, t in outcome.quarantined) == table.num_rows
    assert not outcome.fail


def test_warn_and_fail_see_only_rows_that_were_not_quarantined() -> None:
    table = pa.table({"id": [1, None, 3, 4], "amount": [5.0, -1.0, -2.0, 7.0]})
    outcome = QualityChecker(
        rules(
            {"rule": "not_null", "columns": ["id"], "on_fail": "quarantine"},
            {"rule": "range", "column": "amount", "min": 0, "on_fail": "fail"},
            {"rule": "range", "column": "amount", "max": 6, "on_fail": "warn", "name": "small"},
        )
    ).check(table)
    assert outcome.kept.column("id").to_pylist() == [1, 3, 4]
    assert [(v.rule, v.failed_rows) for v in outcome.violations] == [
        ("not_null:id", 1),
        ("range:amount", 1),
        ("small", 1),
    ]
    assert outcome.fail and outcome.fail_reasons == ["range:amount: 1 row with amount outside [0, +inf]"]


def test_rules_that_pass_report_nothing() -> None:
    table = pa.table({"id": [1, 2, 3]})
    outcome = QualityChecker(
        rules({"rule": "unique", "columns": ["id"]}, {"rule": "not_null", "columns": ["id"]})
    ).check(table)
    assert outcome.violations == [] and outcome.quarantined == [] and not outcome.fail
    assert outcome.kept is table


def test_samples_are_few_and_json_safe() -> None:
    table = generated()
    outcome = QualityChecker(
        rules({"rule": "range", "column": "amount", "min": 0, "max": 10, "on_fail": "warn"})
    ).check(table)
    sample = outcome.violations[0].sample
    assert 0 < len(sample) <= SAMPLE_ROWS
    assert set(sample[0]) == set(table.column_names)
    json.dumps(sample, allow_nan=False)


def test_empty_table() -> None:
    table = generated().slice(0, 0)
    outcome = QualityChecker(
        rules(
            {"rule": "not_null", "columns": ["id"], "on_fail": "quarantine"},
            {"rule": "unique", "columns": ["id"]},
        )
    ).check(table)
    assert outcome.kept.num_rows == 0 and outcome.violations == [] and not outcome.fail


def test_unknown_column_and_non_numeric_range_are_configuration_errors() -> None:
    with pytest.raises(UnknownColumnError) as info:
        QualityChecker(rules({"rule": "not_null", "columns": ["nope"]})).check(generated(10))
    assert info.value.where == "quality[0] (not_null:nope)" and "region" in str(info.value)
    with pytest.raises(InvalidRuleError, match="numeric") as bad_range:
        QualityChecker(rules({"rule": "range", "column": "region", "min": 0})).check(generated(10))
    assert isinstance(bad_range.value, ConfigurationError)


# ------------------------------------------------------------------------------------- row_count
@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (5, ["run produced 5 rows, expected at least 10"]),
        (10, []),
        (100, []),
        (101, ["run produced 101 rows, expected at most 100"]),
    ],
)
def test_row_count_is_checked_on_the_run_total(total: int, expected: list[str]) -> None:
    spec = rules(
        {"rule": "row_count", "min": 10, "max": 100, "on_fail": "warn"},
        {"rule": "not_null", "columns": ["x"]},
    )
    found = check_row_count(spec, total)
    assert [v.reason for v in found] == expected
    assert all(v.on_fail is OnFail.WARN and v.rule == "row_count" for v in found)


def test_row_count_is_not_a_batch_rule() -> None:
    outcome = QualityChecker(rules({"rule": "row_count", "min": 10})).check(pa.table({"x": [1]}))
    assert outcome.violations == [] and not outcome.fail
