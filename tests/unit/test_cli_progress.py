"""``aoetl status`` and ``aoetl run``'s progress bars read a run through the common fold of its events: a
redelivered batch shows once. The Kafka client is a fake here; ``tests/e2e/test_progress.py`` runs the
same commands against the real system."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.progress import Progress
from typer.testing import CliRunner

import aoetl.client
from aoetl.cli import app
from aoetl.commands import run_display
from shared.contracts import (
    BatchLoaded,
    ErrorInfo,
    EventKind,
    PipelineResult,
    QualityViolation,
    RunEvent,
    RunPlanned,
    RunStatus,
    RunSummary,
    Split,
    SplitKind,
    Stage,
)
from shared.kafka.topics import Topics
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def ev(kind: EventKind, stage: Stage, **kw: Any) -> RunEvent:
    return RunEvent(run_id="r1", kind=kind, stage=stage, at=T0, **kw)


def events() -> list[RunEvent]:
    splits = [Split(kind=SplitKind.WHOLE, index=i, count=2) for i in range(2)]
    loaded = ev(
        EventKind.BATCH_LOADED,
        Stage.LOAD,
        batch_id="t0:0",
        rows_in=7,
        rows_out=7,
        payload=BatchLoaded(applied=True),
    )
    violation = QualityViolation(rule="ids", on_fail=OnFail.QUARANTINE, reason="1 row", failed_rows=1)
    return [
        ev(EventKind.RUN_ACCEPTED, Stage.ORCHESTRATE),
        ev(EventKind.RUN_PLANNED, Stage.ORCHESTRATE, payload=RunPlanned(splits=splits)),
        ev(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id="t0", batches=2, rows_out=8),
        ev(EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, batch_id="t0:0", payload=violation),
        ev(
            EventKind.BATCH_TRANSFORMED,
            Stage.TRANSFORM,
            batch_id="t0:0",
            rows_in=8,
            rows_out=7,
            rows_rejected=1,
        ),
        loaded,
        loaded.model_copy(update={"event_id": "redelivered", "payload": BatchLoaded(applied=False)}),
    ]


class FakeClient:
    def __init__(
        self,
        result: PipelineResult | None = None,
        run: list[RunEvent] | None = None,
        history: list[RunSummary] | None = None,
    ) -> None:
        self.result, self.run, self.history = result, run or [], history or []
        self.read: list[tuple[str, ...]] = []

    def reader(self, *topics: str, from_beginning: bool) -> HistoryReader:
        self.read.append(topics)
        return HistoryReader(self.history)

    def close(self) -> None:
        pass

    def find_result(self, run_id: str) -> PipelineResult | None:
        return self.result

    def run_events(self, run_id: str) -> list[RunEvent]:
        return [e for e in self.run if e.run_id == run_id]


class HistoryReader:
    """The runs topic as ``aoetl.commands.runs`` reads it: every record of it, in log order."""

    def __init__(self, records: list[RunSummary]) -> None:
        self.records = records

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def drain(self, types: dict[str, type]) -> Iterator[tuple[str, Any]]:
        assert set(types) == {Topics.RUNS}
        for record in self.records:
            yield Topics.RUNS, record


def status(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> Any:
    # the commands import the client when they run (cold start, aoetl.cli): the fake replaces it there
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: client)
    return CliRunner().invoke(app, ["status", "r1"], env={"COLUMNS": "160"})


def test_status_of_a_run_in_progress_counts_a_redelivered_batch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = status(monkeypatch, FakeClient(run=events()))
    assert shown.exit_code == 0, shown.output
    assert (
        "RUNNING for " in shown.output
        and "1 of 2 splits extracted, 1 batches (7 rows) loaded" in shown.output
    )
    assert "last event BATCH_LOADED at 09:30:00" in shown.output
    assert "rule ids (quarantine): 1 of 8 checked rows failed (12.5%)" in shown.output
    load_row = next(line for line in shown.output.splitlines() if " load " in line)
    assert [cell.strip() for cell in load_row.split("│")[1:6]] == ["load", "7", "7", "0", "1"]


def test_status_of_a_run_in_progress_shows_the_bytes_loaded_when_its_sink_knows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_bytes = [
        e.model_copy(update={"payload": BatchLoaded(applied=e.payload.applied, bytes=4096)})
        if isinstance(e.payload, BatchLoaded)
        else e
        for e in events()
    ]
    shown = status(monkeypatch, FakeClient(run=with_bytes))
    assert "1 batches (7 rows, 4,096 bytes) loaded" in shown.output, shown.output
    as_json = CliRunner().invoke(app, ["status", "r1", "-o", "json"], env={"COLUMNS": "160"})
    assert json.loads(as_json.output)["bytes_loaded"] == 4096
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: FakeClient(run=events()))
    as_json = CliRunner().invoke(app, ["status", "r1", "-o", "json"], env={"COLUMNS": "160"})
    assert json.loads(as_json.output)["bytes_loaded"] is None  # the sink did not say: not made up


def test_status_of_a_finished_run_is_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    result = PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="orders",
        status=RunStatus.FAILED,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
    )
    shown = status(monkeypatch, FakeClient(result=result, run=events()))
    assert shown.exit_code == 1 and "FAILED in 2.0s" in shown.output


def test_status_of_an_unknown_run(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient(history=[RunSummary(run_id="other", as_of=T0)])
    assert status(monkeypatch, client).exit_code == 6
    assert client.read == [(Topics.RUNS,)], "the run history was asked before giving up"


def test_status_of_a_run_past_its_events_retention_is_its_run_history_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    older = RunSummary(run_id="r1", pipeline="orders", submitted_at=T0, as_of=T0)
    summary = older.model_copy(
        update={
            "status": RunStatus.FAILED,
            "finished_at": T0 + timedelta(seconds=3),
            "rows_extracted": 1200,
            "rows_loaded": 900,
            "bytes_loaded": 54321,
            "error": ErrorInfo(error_class="SinkError", message="table orders is read-only"),
        }
    )
    shown = status(monkeypatch, FakeClient(history=[older, summary]))
    assert shown.exit_code == 1, shown.output  # FAILED's exit code, as with a result
    text = " ".join(shown.output.split())
    assert "run r1 (orders): FAILED in 3.0s" in text
    assert "a summary from the run history: the run's events are past their retention" in text
    assert "1,200" in text and "900" in text and "54,321" in text
    assert "SinkError: table orders is read-only" in text

    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: FakeClient(history=[older, summary]))
    as_json = CliRunner().invoke(app, ["status", "r1", "-o", "json"])
    document = json.loads(as_json.output)
    assert document["source"] == "run history summary"
    assert (document["status"], document["rows_loaded"]) == ("FAILED", 900)


class FakeReader:
    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches

    def poll(self, types: dict[str, type]) -> Iterator[tuple[str, Any]]:
        for value in self.batches.pop(0) if self.batches else []:
            yield (Topics.RESULTS if isinstance(value, PipelineResult) else Topics.EVENTS, value)


def test_progress_bars_count_splits_then_batches_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, tuple[float | None, float, str]]] = []
    real_update = run_display._update_bars

    def spy(bars: Progress, tasks: dict[Stage, Any], progress: Any) -> None:
        real_update(bars, tasks, progress)
        seen.append({t.description: (t.total, t.completed, t.fields["rows"]) for t in bars.tasks})

    monkeypatch.setattr(run_display, "_update_bars", spy)
    result = PipelineResult(
        run_id="r1", request_id="q1", pipeline="p", status=RunStatus.COMPLETED, started_at=T0, finished_at=T0
    )
    reader = FakeReader(
        [
            events(),
            [ev(EventKind.BATCH_LOADED, Stage.LOAD, batch_id="x").model_copy(update={"run_id": "r2"})],
            [result],
        ]
    )
    assert run_display.follow_run(FakeClient(), reader, "r1", timeout=30) == result
    assert seen[-1] == {
        "extract": (2, 1, "8"),
        "transform": (2, 1, "7"),
        "load": (2, 1, "7"),
    }
    assert seen[0]["transform"] == (None, 0, "0"), "no total before a split says how many batches"


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_refresh_on_their_own_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    """Piped, rich shows the bars once when they stop: no refresh thread rebuilding them for nobody."""
    refreshing: list[bool] = []

    def spy(bars: Progress, tasks: dict[Stage, Any], progress: Any) -> None:
        refreshing.append(bars.live.auto_refresh)

    monkeypatch.setattr(run_display, "_update_bars", spy)
    monkeypatch.setattr(type(run_display.console), "is_terminal", property(lambda self: terminal))
    result = PipelineResult(
        run_id="r1", request_id="q1", pipeline="p", status=RunStatus.COMPLETED, started_at=T0, finished_at=T0
    )
    assert run_display.follow_run(FakeClient(), FakeReader([events(), [result]]), "r1", timeout=30) == result
    assert refreshing and set(refreshing) == {terminal}
