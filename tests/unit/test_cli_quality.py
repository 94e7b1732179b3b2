"""``aoetl status`` and ``aoetl run --wait`` show a result's quality outcomes and what it wrote: a COMPLETED
run whose warn rule failed on 84% of its rows says so, right under its status line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import aoetl.client
from aoetl.cli import app
from aoetl.commands import run_display
from shared.contracts import PipelineResult, RuleAction, RuleOutcome, RunStatus, WriteOutcome

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def result() -> PipelineResult:
    return PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="orders",
        status=RunStatus.COMPLETED,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
        quality=[
            RuleOutcome(
                rule="range:amount",
                columns=["amount"],
                rows_checked=1000,
                rows_failed=840,
                action=RuleAction.WARNED,
                samples=["-1.5", "[bold]x[/]"],
            ),
            RuleOutcome(rule="not_null:id", columns=["id"], rows_checked=1000, action=RuleAction.PASSED),
        ],
        written=[WriteOutcome(destination="duckdb", target="out.duckdb:orders", rows=1000)],
    )


class FakeClient:
    def __init__(self, found: PipelineResult) -> None:
        self.found = found

    def find_result(self, run_id: str) -> PipelineResult | None:
        return self.found

    def run_events(self, run_id: str) -> list[Any]:
        return []


def rows_of(output: str) -> dict[str, list[str]]:
    """The quality table's rows by rule name."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] in ("range:amount", "not_null:id"):
            rows[cells[0]] = cells
    return rows


def test_status_shows_each_rules_failed_of_checked_rows_and_what_was_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: FakeClient(result()))
    shown = CliRunner().invoke(app, ["status", "r1"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert "COMPLETED in 3.0s" in shown.output
    rows = rows_of(shown.output)
    # user data is shown as text, not read as markup
    assert rows["range:amount"] == ["range:amount", "840 / 1,000", "84.0%", "WARNED", "-1.5, [bold]x[/]"]
    assert rows["not_null:id"] == ["not_null:id", "0 / 1,000", "0.0%", "PASSED", ""]
    assert "→ wrote 1,000 rows to duckdb out.duckdb:orders" in shown.output
    assert "bytes" not in shown.output  # unknown: not made up


def test_status_shows_the_bytes_written_and_json_carries_them(monkeypatch: pytest.MonkeyPatch) -> None:
    written = WriteOutcome(destination="jsonl", target="out/orders", rows=1000, bytes=1_234_567)
    monkeypatch.setattr(
        aoetl.client, "AoetlClient", lambda: FakeClient(result().model_copy(update={"written": [written]}))
    )
    shown = CliRunner().invoke(app, ["status", "r1"], env={"COLUMNS": "160"})
    assert "→ wrote 1,000 rows to jsonl out/orders, 1,234,567 bytes" in shown.output
    as_json = CliRunner().invoke(app, ["status", "r1", "-o", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["written"] == [
        {"destination": "jsonl", "target": "out/orders", "rows": 1000, "bytes": 1_234_567}
    ]


def test_a_result_without_outcomes_shows_no_quality_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        aoetl.client,
        "AoetlClient",
        lambda: FakeClient(result().model_copy(update={"quality": [], "written": []})),
    )
    shown = CliRunner().invoke(app, ["status", "r1"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0 and "quality" not in shown.output and "wrote" not in shown.output


def test_the_result_aoetl_run_waited_for_prints_its_outcomes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``aoetl run --wait`` prints the result it followed with ``print_result``: the same lines."""
    console = Console(width=160, record=True)
    monkeypatch.setattr(run_display, "console", console)
    written = WriteOutcome(destination="parquet", target="out/orders", rows=5, bytes=2048)
    run_display.print_result(result().model_copy(update={"status": RunStatus.FAILED, "written": [written]}))
    text = console.export_text()
    assert "FAILED in 3.0s" in text and rows_of(text)["range:amount"][1:4] == [
        "840 / 1,000",
        "84.0%",
        "WARNED",
    ]
    assert "→ wrote 5 rows to parquet out/orders, 2,048 bytes" in text
