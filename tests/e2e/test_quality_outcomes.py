"""Issue 12: a run whose ``warn`` rule fails on most rows still COMPLETES, and its result says so: per rule
the rows it checked and failed, the action taken and a few failing values, and what was written where.
Every service is a process on the real broker and PostgreSQL (the package's shared ``system``); the
expected figures are computed from the source rows with the standard library. ``aoetl status`` prints them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from shared.contracts import RuleAction, RuleOutcome, WriteOutcome
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import assert_completed, duckdb_figures, orders_spec, run_spec, write_orders

pytestmark = pytest.mark.e2e

LIMIT = 100.0  # amounts are uniform in [1, 500]: about 80% of the rows are above it


def test_a_warn_rule_failing_on_most_rows_is_in_the_completed_result_and_in_status(
    system: System, tmp_path: Path, kafka_bootstrap: str
) -> None:
    rows = write_orders(tmp_path / "in", 4_000, files=2, seed=12)
    db = tmp_path / "outcomes.duckdb"
    spec = orders_spec(
        "quality-outcomes-e2e",
        {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        {"type": "duckdb", "path": str(db), "table": "orders"},
    )
    spec["quality"] = [
        {"rule": "not_null", "columns": ["customer"], "on_fail": "quarantine", "name": "has-customer"},
        {"rule": "range", "column": "amount", "max": LIMIT, "on_fail": "warn", "name": "small-amount"},
        {"rule": "accepted_values", "column": "status", "values": ["paid", "shipped"], "on_fail": "warn"},
    ]
    result = run_spec(system, spec)
    assert_completed(result)

    kept = [r for r in rows if r["status"] != "cancelled"]
    quarantined = [r for r in kept if not r["customer"]]
    checked = [r for r in kept if r["customer"]]  # warn rules see the rows no quarantine rule took
    too_big = [r for r in checked if float(r["amount"]) > LIMIT]
    assert len(too_big) > 0.7 * len(checked), "the data must fail the warn rule on most rows"

    by_rule = {o.rule: o for o in result.quality}
    assert list(by_rule) == ["has-customer", "small-amount", "accepted_values:status"]
    assert by_rule["has-customer"].model_dump(exclude={"samples"}) == RuleOutcome(
        rule="has-customer",
        columns=["customer"],
        rows_checked=len(kept),
        rows_failed=len(quarantined),
        action=RuleAction.QUARANTINED,
    ).model_dump(exclude={"samples"})
    warned = by_rule["small-amount"]
    assert (warned.action, warned.columns) == (RuleAction.WARNED, ["amount"])
    assert (warned.rows_failed, warned.rows_checked) == (len(too_big), len(checked))
    assert 1 <= len(warned.samples) <= 5
    amounts = {f"{float(r['amount'])}" for r in too_big}
    assert all(value in amounts for value in warned.samples), warned.samples
    assert by_rule["accepted_values:status"].action is RuleAction.PASSED
    assert by_rule["accepted_values:status"].rows_checked == len(checked)

    assert duckdb_figures(db, "orders")["count"] == len(checked)
    assert result.written == [
        WriteOutcome(destination="duckdb", target=f"{db}:orders", rows=len(checked), bytes=None)
    ]

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_TOPIC_SUFFIX": system.suffix,
        "COLUMNS": "200",
        **system.cli_env,
    }
    shown = CliRunner().invoke(app, ["status", result.run_id], env=env)
    assert shown.exit_code == 0, shown.output
    fraction = f"{len(too_big) / len(checked):.1%}"
    line = next(line for line in shown.output.splitlines() if "small-amount" in line)
    assert [cell.strip() for cell in line.split("│")[1:5]] == [
        "small-amount",
        f"{len(too_big):,} / {len(checked):,}",
        fraction,
        "WARNED",
    ]
    assert f"wrote {len(checked):,} rows to duckdb {db}:orders" in " ".join(shown.output.split())
