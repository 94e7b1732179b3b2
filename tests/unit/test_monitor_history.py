"""The monitor's run history writer (``services.monitor.history``) with a fake sink: what a summary says of
a fold, when it is written (a new run and a status change at once, moving counts coalesced until the next
flush), that a redelivered event writes nothing, that a failed commit keeps its summaries, and that a
summary's error is redacted and cut short. The real transactional sink is exercised on the real broker by
``tests/e2e/test_run_history.py``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from services.monitor.exceptions import MonitorTransientError
from services.monitor.history import MAX_ERROR_CHARS, RunHistory, SummariesFenced, summary_of
from services.monitor.rules import RunRecord, Thresholds, apply_event
from shared.avro import AvroSerde, SchemaCatalog
from shared.contracts import (
    BatchLoaded,
    ErrorInfo,
    EventKind,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunFinished,
    RunStatus,
    RunSummary,
    Stage,
)
from shared.progress import RunProgress
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
THRESHOLDS = Thresholds(stuck_after_s=60, quality_max_failed_fraction=0.5, dead_letter_max_per_window=10)
SECRET = "postgresql://etl:hunter2-very-secret@db.internal:5432/orders"


class FakeSink:
    """Records each commit as (partition, summaries); fails the next ``failures`` commits, and is fenced
    (another replica took the partition) while ``fenced``."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, list[RunSummary]]] = []
        self.failures = 0
        self.fenced = False
        self.closed = False

    async def commit(self, partition: int, summaries: Sequence[RunSummary]) -> None:
        if self.fenced:
            raise SummariesFenced(f"partition {partition} moved")
        if self.failures:
            self.failures -= 1
            raise MonitorTransientError("broker away")
        self.commits.append((partition, list(summaries)))

    async def close(self) -> None:
        self.closed = True

    def written(self) -> list[RunSummary]:
        return [summary for _, summaries in self.commits for summary in summaries]


def ev(kind: EventKind, stage: Stage = Stage.ORCHESTRATE, at_s: float = 0, **kw: object) -> RunEvent:
    return RunEvent(run_id="r1", kind=kind, stage=stage, at=T0 + timedelta(seconds=at_s), **kw)


def accepted() -> RunEvent:
    return ev(EventKind.RUN_ACCEPTED, payload=RunAccepted(pipeline="orders", tenant="acme"))


def transformed(batch: str, rows: int, rejected: int = 0) -> RunEvent:
    return ev(
        EventKind.BATCH_TRANSFORMED,
        Stage.TRANSFORM,
        at_s=2,
        batch_id=batch,
        rows_in=rows + rejected,
        rows_out=rows,
        rows_rejected=rejected,
    )


def loaded(batch: str, rows: int, size: int | None = None) -> RunEvent:
    return ev(
        EventKind.BATCH_LOADED,
        Stage.LOAD,
        at_s=3,
        batch_id=batch,
        rows_in=rows,
        rows_out=rows,
        payload=BatchLoaded(applied=True, bytes=size),
    )


def finished(status: RunStatus = RunStatus.COMPLETED) -> RunEvent:
    return ev(EventKind.RUN_FINISHED, at_s=9, payload=RunFinished(status=status))


class Monitor:
    """The events agent's steps (``services.monitor.app._on_events``): fold, offer, store the record."""

    def __init__(self) -> None:
        self.sink = FakeSink()
        self.owned: set[int] = set()  # the events partitions the consumer is assigned
        self.history = RunHistory(self.sink, owns=self.owned.__contains__, clock=lambda: T0)
        self.record: RunRecord | None = None

    async def on(self, *events: RunEvent) -> None:
        for event in events:
            updated, _ = apply_event(self.record, event, partition=4, thresholds=THRESHOLDS)
            before = self.record.progress if self.record is not None else None
            await self.history.offer(before, updated.progress, 4)
            self.record = updated


def test_a_summary_says_who_when_how_it_ended_and_how_many_rows() -> None:
    progress = RunProgress(run_id="r1").apply_all(
        [
            accepted(),
            ev(EventKind.RUN_PLANNED, at_s=1),
            ev(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, at_s=1, task_id="t1", rows_out=12, batches=2),
            ev(
                EventKind.QUALITY_VIOLATION,
                Stage.TRANSFORM,
                at_s=2,
                batch_id="b1",
                payload=QualityViolation(
                    rule="positive", on_fail=OnFail.QUARANTINE, reason="<0", failed_rows=2
                ),
            ),
            transformed("b1", 4, rejected=2),
            transformed("b2", 6),
            loaded("b1", 4, size=100),
            loaded("b2", 6, size=150),
            finished(),
        ]
    )
    summary = summary_of(progress, as_of=T0)
    assert summary == RunSummary(
        run_id="r1",
        pipeline="orders",
        tenant="acme",
        status=RunStatus.COMPLETED,
        submitted_at=T0,
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=9),
        rows_extracted=12,
        rows_transformed=10,
        rows_loaded=10,
        rows_rejected=2,
        batches_loaded=2,
        bytes_loaded=250,
        rules_violated=1,
        rows_failed_quality=2,
        as_of=T0,
    )


def test_bytes_are_unknown_once_one_batch_could_not_say_and_a_v1_summary_still_reads() -> None:
    progress = RunProgress(run_id="r1").apply_all([accepted(), loaded("b1", 4, size=100), loaded("b2", 6)])
    assert summary_of(progress, as_of=T0).bytes_loaded is None  # b2's sink (say DuckDB) cannot know
    v1 = SchemaCatalog.default().history(RunSummary.avro_name)[0]
    assert all(f["name"] != "bytes_loaded" for f in v1.json["fields"])
    datum = {f["name"]: f.get("default") for f in v1.json["fields"]} | {"run_id": "r0", "as_of": T0}
    old = AvroSerde(SchemaCatalog([v1])).encode_record(RunSummary.avro_name, datum | {"rows_loaded": 7})
    decoded = AvroSerde().decode(old, RunSummary)
    assert (decoded.run_id, decoded.rows_loaded, decoded.bytes_loaded) == ("r0", 7, None)


def test_the_error_is_the_latest_events_redacted_and_cut_short() -> None:
    long = f"cannot connect to {SECRET}: " + "x" * 2000
    progress = RunProgress(run_id="r1").apply_all(
        [
            accepted(),
            ev(
                EventKind.TASK_FAILED,
                Stage.EXTRACT,
                at_s=5,
                error=ErrorInfo(error_class="Late", message=long),
            ),
            # redelivered older error: the latest by event time stays
            ev(
                EventKind.TASK_FAILED,
                Stage.EXTRACT,
                at_s=1,
                error=ErrorInfo(error_class="Early", message="e"),
            ),
        ]
    )
    error = summary_of(progress, as_of=T0).error
    assert error is not None and error.error_class == "Late"
    assert "hunter2" not in error.message and len(error.message) <= MAX_ERROR_CHARS
    assert error.message.endswith("…")


async def test_a_new_run_and_each_status_change_are_written_at_once_counts_at_the_flush() -> None:
    monitor = Monitor()
    await monitor.on(accepted())
    assert [(p, [s.status for s in ss]) for p, ss in monitor.sink.commits] == [(4, [None])]
    await monitor.on(ev(EventKind.RUN_PLANNED, at_s=1), transformed("b1", 5), loaded("b1", 5))
    await monitor.on(transformed("b2", 7), loaded("b2", 7))
    assert len(monitor.sink.commits) == 1, "moving counts wait for the flush"
    assert monitor.history.pending["r1"].rows_loaded == 12
    await monitor.history.flush()
    assert [s.rows_loaded for s in monitor.sink.written()] == [0, 12], "one write for four batches"
    await monitor.on(finished())
    last = monitor.sink.written()[-1]
    assert (last.status, last.rows_loaded, last.finished_at) == (
        RunStatus.COMPLETED,
        12,
        T0 + timedelta(seconds=9),
    )
    assert monitor.history.pending == {}


async def test_a_redelivered_event_writes_nothing_and_counts_nothing_twice() -> None:
    monitor = Monitor()
    events = [accepted(), transformed("b1", 5), loaded("b1", 5), finished()]
    await monitor.on(*events)
    written = monitor.sink.written()
    await monitor.on(*events[1:3])  # redelivered after the end: the finished fold ignores them
    monitor2 = Monitor()
    await monitor2.on(events[0], events[1], events[2], events[1], events[2], events[3])  # redelivered before
    assert monitor.sink.written() == written
    assert monitor.history.pending == {}
    assert [s.model_dump() for s in monitor2.sink.written()] == [s.model_dump() for s in written]


async def test_a_late_event_of_a_forgotten_run_does_not_replace_its_summary() -> None:
    monitor = Monitor()
    await monitor.on(loaded("b9", 3), finished())  # no RUN_ACCEPTED: the table forgot the run
    assert monitor.sink.commits == [] and monitor.history.pending == {}


async def test_a_run_whose_first_event_came_before_its_acceptance_is_written_once_accepted() -> None:
    monitor = Monitor()
    await monitor.on(transformed("b1", 5))
    assert monitor.sink.commits == []
    await monitor.on(accepted())
    assert [s.rows_transformed for s in monitor.sink.written()] == [5], "at once, as a new run"


async def test_a_rejected_run_without_acceptance_is_still_in_the_history() -> None:
    monitor = Monitor()
    await monitor.on(finished(RunStatus.REJECTED))
    assert [s.status for s in monitor.sink.written()] == [RunStatus.REJECTED]


async def test_a_failed_flush_keeps_its_summaries_and_a_status_change_that_cannot_be_written_raises() -> None:
    monitor = Monitor()
    await monitor.on(accepted(), transformed("b1", 5))
    monitor.sink.failures = 1
    await monitor.history.flush()  # the timer's flush: logged, kept, tried again
    assert monitor.history.pending["r1"].rows_transformed == 5
    await monitor.history.flush()
    assert monitor.sink.written()[-1].rows_transformed == 5 and monitor.history.pending == {}
    monitor.sink.failures = 1
    with pytest.raises(MonitorTransientError):
        await monitor.on(finished())
    assert monitor.history.pending["r1"].status is RunStatus.COMPLETED  # the restart writes it again


async def test_close_flushes_what_is_pending_and_closes_the_sink() -> None:
    monitor = Monitor()
    await monitor.on(accepted(), transformed("b1", 5))
    await monitor.history.close()
    assert monitor.sink.written()[-1].rows_transformed == 5 and monitor.sink.closed


def test_the_folds_times_and_error_survive_the_monitors_table_round_trip() -> None:
    failed = ev(
        EventKind.TASK_FAILED, Stage.EXTRACT, at_s=4, error=ErrorInfo(error_class="E", message="boom")
    )
    record, _ = apply_event(None, accepted(), partition=1, thresholds=THRESHOLDS)
    for event in (ev(EventKind.RUN_PLANNED, at_s=1), failed):
        record, _ = apply_event(record, event, partition=1, thresholds=THRESHOLDS)
    restored = RunRecord.from_table(json.loads(json.dumps(record.to_table())))
    assert restored is not None
    assert restored.progress.started_at == T0 + timedelta(seconds=1)
    assert restored.progress.last_error == failed.error
    assert summary_of(restored.progress, T0) == summary_of(record.progress, T0)


async def test_a_fenced_writer_drops_the_partitions_pending_summaries_and_does_not_raise() -> None:
    monitor = Monitor()
    await monitor.on(accepted(), transformed("b1", 5))
    monitor.sink.fenced = True
    await monitor.history.flush()
    assert monitor.history.pending == {}, "the partition's new owner writes them"
    await monitor.on(finished())  # a status change on a partition that moved: no failure of this monitor
    assert monitor.history.pending == {} and len(monitor.sink.commits) == 1


async def test_a_writer_fenced_on_a_partition_it_still_owns_keeps_its_summaries_and_writes_them_later() -> (
    None
):
    """A spurious fence (the coordinator timed the transaction out, or failed over) must not lose a
    finished run's final summary: the partition is still this replica's, so the next attempt's new
    producer takes the id back."""
    monitor = Monitor()
    monitor.owned.add(4)
    await monitor.on(accepted(), transformed("b1", 5))
    monitor.sink.fenced = True
    with pytest.raises(MonitorTransientError):
        await monitor.on(finished())  # a status change is written at once: the failure is the event's
    assert [s.status for s in monitor.history.pending.values()] == [RunStatus.COMPLETED]
    await monitor.history.flush()  # a timer's flush does not raise
    monitor.sink.fenced = False
    await monitor.history.flush()
    assert monitor.history.pending == {} and monitor.sink.written()[-1].status is RunStatus.COMPLETED
