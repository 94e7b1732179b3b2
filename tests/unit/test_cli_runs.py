"""``aoetl runs list`` over a fake runs topic: the latest record of each run, filtered, newest first, as a
table or one JSON document; bad filters are usage errors. ``tests/e2e/test_run_history.py`` runs it
against the real system."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

import aoetl.client
from aoetl.cli import app
from aoetl.commands.runs import parse_since, select
from shared.contracts import RunStatus, RunSummary
from tests.unit.test_cli_progress import FakeClient

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def summary(run_id: str, minutes: int, pipeline: str = "orders", **kw: Any) -> RunSummary:
    return RunSummary(
        run_id=run_id, pipeline=pipeline, submitted_at=T0 + timedelta(minutes=minutes), as_of=T0, **kw
    )


# in log order: r1 first running, then completed (its latest record wins)
HISTORY = [
    summary("r1", 0),
    summary("r2", 10, "users", status=RunStatus.FAILED),
    summary("r1", 0, status=RunStatus.COMPLETED, rows_loaded=42, bytes_loaded=4096),
    summary("r3", 20),
    summary("r4", 30, status=RunStatus.COMPLETED, rows_loaded=7),
]


def runs(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: FakeClient(history=HISTORY))
    return CliRunner().invoke(app, ["runs", "list", *args], env={"COLUMNS": "200"})


def ids(shown: Any) -> list[str]:
    assert shown.exit_code == 0, shown.output
    return [run["run_id"] for run in json.loads(shown.output)]


def test_runs_are_listed_newest_first_one_entry_per_run_with_its_latest_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = runs(monkeypatch, "-o", "json")
    assert ids(shown) == ["r4", "r3", "r2", "r1"]
    r1, r4 = json.loads(shown.output)[-1], json.loads(shown.output)[0]
    assert (r1["status"], r1["rows_loaded"], r1["bytes_loaded"]) == ("COMPLETED", 42, 4096)
    assert r4["bytes_loaded"] is None  # its sink could not say (or a v1 summary)


def test_an_unfinished_summary_written_after_a_finished_one_does_not_replace_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = summary("r1", 0, rows_loaded=10)  # a replica that lost the partition, writing late
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: FakeClient(history=[*HISTORY, stale]))
    shown = CliRunner().invoke(app, ["runs", "list", "-o", "json"])
    r1 = json.loads(shown.output)[-1]
    assert (r1["run_id"], r1["status"], r1["rows_loaded"]) == ("r1", "COMPLETED", 42)


def test_filters_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ids(runs(monkeypatch, "--pipeline", "users", "-o", "json")) == ["r2"]
    assert ids(runs(monkeypatch, "--status", "completed", "-o", "json")) == ["r4", "r1"]
    assert ids(runs(monkeypatch, "--status", "RUNNING", "-o", "json")) == ["r3"]
    assert ids(runs(monkeypatch, "--since", "2026-03-01T09:45", "-o", "json")) == ["r4", "r3"]
    assert ids(runs(monkeypatch, "--limit", "2", "-o", "json")) == ["r4", "r3"]


def test_the_table_shows_status_counts_and_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = runs(monkeypatch)
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if "│ r3" in line or line.startswith("│ r3"))
    assert "RUNNING" in row
    assert "4 run(s)" in shown.output


def test_a_bad_filter_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runs(monkeypatch, "--status", "DONE").exit_code == 2
    assert runs(monkeypatch, "--since", "yesterday").exit_code == 2


def test_since_takes_an_age_or_a_time() -> None:
    assert parse_since("90m", T0) == T0 - timedelta(minutes=90)
    assert parse_since("7d", T0) == T0 - timedelta(days=7)
    assert parse_since("2026-02-01", T0) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_since("2026-02-01T10:00+02:00", T0) == datetime(2026, 2, 1, 8, tzinfo=UTC)


def test_select_falls_back_on_other_times_for_runs_without_a_submission_time() -> None:
    rejected = RunSummary(
        run_id="rej", status=RunStatus.REJECTED, finished_at=T0 + timedelta(hours=1), as_of=T0
    )
    assert [s.run_id for s in select([*HISTORY[:2], rejected])] == ["rej", "r2", "r1"]
