"""The one fold of run events (``shared.progress``): every batch counted once whatever is redelivered or
reordered, the applied delivery's figures winning, exact quality fractions, bounded for runs that never
end, and the same after a JSON round trip."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.contracts import (
    BatchLoaded,
    EventKind,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunFinished,
    RunPlanned,
    RunStatus,
    Split,
    SplitKind,
    Stage,
    StageStats,
    StreamProgress,
)
from shared.progress import RunProgress, fold
from shared.progress import folding as progress_module
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def ev(kind: EventKind, stage: Stage, **kw: object) -> RunEvent:
    return RunEvent(run_id="r1", kind=kind, stage=stage, at=kw.pop("at", T0), **kw)  # type: ignore[arg-type]


def planned(n: int) -> RunEvent:
    splits = [Split(kind=SplitKind.WHOLE, index=i, count=n) for i in range(n)]
    return ev(EventKind.RUN_PLANNED, Stage.ORCHESTRATE, payload=RunPlanned(splits=splits))


def extracted(task: str, batches: int, rows: int, ms: int = 0) -> RunEvent:
    return ev(
        EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id=task, batches=batches, rows_out=rows, duration_ms=ms
    )


def transformed(
    batch: str, rows_in: int, rows_out: int | None = None, rejected: int = 0, ms: int = 0
) -> RunEvent:
    out = rows_in - rejected if rows_out is None else rows_out
    return ev(
        EventKind.BATCH_TRANSFORMED,
        Stage.TRANSFORM,
        batch_id=batch,
        rows_in=rows_in,
        rows_out=out,
        rows_rejected=rejected,
        duration_ms=ms,
    )


def loaded(
    batch: str, rows: int, *, applied: bool = True, dedup: int = 0, ms: int = 0, size: int | None = None
) -> RunEvent:
    return ev(
        EventKind.BATCH_LOADED,
        Stage.LOAD,
        batch_id=batch,
        rows_in=rows + dedup,
        rows_out=rows,
        rows_rejected=dedup,
        duration_ms=ms,
        payload=BatchLoaded(applied=applied, bytes=size),
    )


def violation(batch: str, failed: int, rule: str = "ids", on_fail: OnFail = OnFail.QUARANTINE) -> RunEvent:
    payload = QualityViolation(rule=rule, on_fail=on_fail, reason=f"{failed} rows", failed_rows=failed)
    return ev(EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, batch_id=batch, payload=payload)


def stats(progress: RunProgress) -> dict[Stage, tuple[int, int, int, int, int]]:
    return {
        s.stage: (s.rows_in, s.rows_out, s.rows_rejected, s.batches, s.duration_ms)
        for s in progress.stage_stats()
    }


def one_shot_run() -> list[RunEvent]:
    accepted = RunAccepted(pipeline="orders", stuck_after_s=60)
    return [
        ev(EventKind.RUN_ACCEPTED, Stage.ORCHESTRATE, payload=accepted),
        planned(2),
        extracted("r1:t0", 2, 20, ms=5),
        violation("r1:t0:0", 1),
        transformed("r1:t0:0", 10, rejected=1, ms=2),
        loaded("r1:t0:0", 9, ms=3),
        transformed("r1:t0:1", 10, ms=2),
        loaded("r1:t0:1", 8, dedup=2, ms=3),
        extracted("r1:t1", 1, 5, ms=5),
        transformed("r1:t1:0", 5, ms=1),
        loaded("r1:t1:0", 5, ms=1),
    ]


EXPECTED = {
    Stage.EXTRACT: (25, 25, 0, 3, 10),
    Stage.TRANSFORM: (25, 24, 1, 3, 5),
    Stage.LOAD: (24, 22, 2, 3, 7),
}


# ----------------------------------------------------------------------------------------- counting
def test_a_one_shot_run_is_counted_per_stage_and_split() -> None:
    progress = fold("r1", one_shot_run())
    assert stats(progress) == EXPECTED
    assert (progress.pipeline, progress.stuck_after_s, progress.continuous) == ("orders", 60, False)
    assert (progress.splits_planned, progress.splits_extracted, progress.batches_expected) == (2, 2, 3)
    assert (progress.split_batches("r1:t0"), progress.split_batches("r1:t9")) == (2, None)
    assert progress.stage_stats()[0] == StageStats(
        stage=Stage.EXTRACT, rows_in=25, rows_out=25, batches=3, duration_ms=10
    )


def test_every_event_delivered_twice_changes_nothing() -> None:
    events = one_shot_run()
    assert stats(fold("r1", [e for e in events for _ in range(2)])) == EXPECTED
    assert stats(fold("r1", events + events)) == EXPECTED


@pytest.mark.parametrize("applied_first", [True, False])
def test_a_redelivered_batch_counts_once_with_the_applied_deliverys_figures(applied_first: bool) -> None:
    applied = loaded("b0", 9, dedup=1, ms=30)
    # a sink's answer for a batch it applied before: the ledger's rows, no deduplicated rows, no time
    again = loaded("b0", 9, applied=False)
    events = [applied, again] if applied_first else [again, applied]
    progress = fold("r1", events)
    assert stats(progress)[Stage.LOAD] == (10, 9, 1, 1, 30)
    assert progress.stage(Stage.LOAD).counted == 1


def test_the_redelivery_stands_in_when_the_applied_event_was_lost() -> None:
    progress = fold("r1", [loaded("b0", 9, applied=False), loaded("b0", 9, applied=False)])
    assert stats(progress)[Stage.LOAD] == (9, 9, 0, 1, 0)


def test_two_applied_deliveries_count_once_the_first_wins() -> None:
    # The Kafka sink produces a batch again after a crash: both say applied; the batch is still one.
    progress = fold("r1", [loaded("b0", 9, ms=1), loaded("b0", 9, ms=7)])
    assert stats(progress)[Stage.LOAD] == (9, 9, 0, 1, 1)


def test_a_re_run_tasks_split_and_batches_count_once_with_their_first_figures() -> None:
    # A healed task runs again: its split and batches arrive a second time, with other figures.
    events = [extracted("r1:t0", 1, 10), transformed("r1:t0:0", 10, rejected=3), extracted("r1:t0", 1, 10)]
    events.append(transformed("r1:t0:0", 10, rejected=0))
    assert stats(fold("r1", events))[Stage.TRANSFORM] == (10, 7, 3, 1, 0)
    assert fold("r1", events).splits_extracted == 1


def test_events_without_their_unit_count_once_per_event() -> None:
    first = ev(EventKind.BATCH_LOADED, Stage.LOAD, rows_out=5, payload=BatchLoaded(applied=True))
    second = first.model_copy(update={"event_id": "other"})
    assert stats(fold("r1", [first, first, second]))[Stage.LOAD][3] == 2


def test_an_event_of_v1_without_applied_counts_as_applied() -> None:
    legacy = ev(EventKind.BATCH_LOADED, Stage.LOAD, batch_id="b0", rows_in=4, rows_out=4, duration_ms=2)
    assert stats(fold("r1", [loaded("b0", 4, applied=False), legacy]))[Stage.LOAD] == (4, 4, 0, 1, 2)
    assert fold("r1", [legacy]).stage(Stage.LOAD).stand_ins == {}


def test_other_runs_events_are_not_folded() -> None:
    foreign = loaded("b9", 100).model_copy(update={"run_id": "r2"})
    assert stats(fold("r1", [*one_shot_run(), foreign])) == EXPECTED


def test_the_order_of_transform_and_load_events_does_not_matter() -> None:
    batch = [
        violation("b0", 2),
        transformed("b0", 10, rejected=2),
        loaded("b0", 8),
        loaded("b0", 8, applied=False),
    ]
    batch.append(violation("b0", 2, rule="other", on_fail=OnFail.WARN))
    outcomes = set()
    for order in itertools.permutations(batch):
        progress = fold("r1", order)
        quality = tuple(
            (q.rule, q.failed_rows, q.checked_rows) for q in sorted(progress.quality(), key=lambda q: q.rule)
        )
        outcomes.add((tuple(stats(progress).items()), quality))
    assert outcomes == {
        (
            (
                (Stage.EXTRACT, (0, 0, 0, 0, 0)),
                (Stage.TRANSFORM, (10, 8, 2, 1, 0)),
                (Stage.LOAD, (8, 8, 0, 1, 0)),
            ),
            (("ids", 2, 10), ("other", 2, 10)),
        )
    }


# ------------------------------------------------------------------------------------------ quality
def test_quality_counts_a_batchs_failures_once_its_rows_are_checked() -> None:
    progress = fold("r1", [transformed("b1", 100), violation("b2", 50)])
    assert (progress.checked_rows, progress.failed_checked_rows) == (100, 0)
    progress.apply(transformed("b2", 900))
    assert (progress.checked_rows, progress.failed_checked_rows) == (1000, 50)
    (rule,) = progress.quality()
    assert (rule.rule, rule.on_fail, rule.failed, rule.failed_rows, rule.fraction) == (
        "ids",
        OnFail.QUARANTINE,
        False,
        50,
        0.05,
    )


def test_quality_is_exact_under_redelivery_and_rules_add_up() -> None:
    events = [violation("b1", 6, "a"), violation("b1", 4, "b"), transformed("b1", 100)]
    progress = fold("r1", events + events + [violation("b1", 6, "a")])
    assert (progress.checked_rows, progress.failed_checked_rows) == (100, 10)
    assert {q.rule: q.fraction for q in progress.quality()} == {"a": 0.06, "b": 0.04}


def test_a_rule_that_failed_a_batch_is_reported_but_checked_no_rows() -> None:
    progress = fold("r1", [transformed("b1", 10), violation("b2", 3, on_fail=OnFail.FAIL)])
    (rule,) = progress.quality()
    assert (rule.failed, rule.failed_rows, rule.checked_rows, rule.reason) == (True, 0, 10, "3 rows")
    # healed to quarantine, the batch runs again and is transformed: now its rows count, once
    progress.apply(violation("b2", 3, on_fail=OnFail.QUARANTINE))
    progress.apply(transformed("b2", 10, rejected=3))
    (rule,) = progress.quality()
    assert (rule.failed, rule.on_fail, rule.failed_rows, rule.checked_rows) == (
        True,
        OnFail.QUARANTINE,
        3,
        20,
    )


# ---------------------------------------------------------------------------------------- continuous
def test_a_continuous_run_past_the_bound_keeps_a_bounded_exact_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_module, "MAX_TRACKED_BATCHES", 50)
    accepted = ev(
        EventKind.RUN_ACCEPTED, Stage.ORCHESTRATE, payload=RunAccepted(pipeline="clicks", continuous=True)
    )
    progress = RunProgress(run_id="r1").apply_all([accepted])
    heartbeat = ev(EventKind.STREAM_PROGRESS, Stage.EXTRACT, payload=StreamProgress(heartbeat=True))
    n = 50 * 4
    for i in range(n):
        batch = f"clicks:clicks.raw:0:{i * 10}-{i * 10 + 9}"
        stream = StreamProgress(topic="clicks.raw", partition=0, first_offset=i * 10, last_offset=i * 10 + 9)
        read = ev(
            EventKind.STREAM_PROGRESS, Stage.EXTRACT, batch_id=batch, rows_out=10, batches=1, payload=stream
        )
        for event in (
            read,
            heartbeat,
            violation(batch, 1),
            transformed(batch, 10, rejected=1),
            loaded(batch, 9),
        ):
            progress.apply(event)
        # the recent past redelivered (load's uncommitted tail, the monitor's replay): counted once
        progress.apply(loaded(batch, 9, applied=False))
        if i >= 10:
            earlier = f"clicks:clicks.raw:0:{(i - 10) * 10}-{(i - 10) * 10 + 9}"
            progress.apply(loaded(earlier, 9, applied=False))
            progress.apply(transformed(earlier, 10, rejected=1))
            progress.apply(violation(earlier, 1))
    assert stats(progress) == {
        Stage.EXTRACT: (10 * n, 10 * n, 0, n, 0),
        Stage.TRANSFORM: (10 * n, 9 * n, n, n, 0),
        Stage.LOAD: (9 * n, 9 * n, 0, n, 0),
    }
    assert (progress.checked_rows, progress.failed_checked_rows) == (10 * n, n)
    assert all(len(progress.stage(s).seen) == 50 for s in Stage if s in progress.stages)
    assert len(progress.failures) <= 50 and progress.splits_extracted == 0
    # failures of batches never transformed (not checked rows) are bounded too
    for i in range(50 * 5):
        progress.apply(violation(f"lost{i}", 1, on_fail=OnFail.FAIL))
    assert len(progress.failures) <= 4 * 50
    assert progress.failed_checked_rows == n
    assert len(json.dumps(progress.model_dump(mode="json"))) < 50 * 4 * 200, "the stored record stays small"


def test_without_a_window_nothing_is_ever_settled() -> None:
    progress = RunProgress(run_id="r1", window=None)
    for i in range(3000):
        progress.apply(loaded(f"b{i}", 1))
    progress.apply(loaded("b0", 1, applied=False))
    assert len(progress.stage(Stage.LOAD).seen) == 3000 and progress.stage(Stage.LOAD).counted == 3000


# ------------------------------------------------------------------------------------------ the end
def test_a_finished_run_keeps_its_totals_forgets_its_batches_and_counts_nothing_more() -> None:
    finished = ev(
        EventKind.RUN_FINISHED,
        Stage.ORCHESTRATE,
        at=T0 + timedelta(seconds=30),
        payload=RunFinished(status=RunStatus.FAILED),
    )
    progress = fold("r1", [*one_shot_run(), finished])
    assert stats(progress) == EXPECTED and (progress.finished, progress.status) == (True, RunStatus.FAILED)
    assert all(not ledger.seen for ledger in progress.stages.values()) and progress.failures == {}
    # a late duplicate, a dead letter re-driven after the run failed: the run's figures are its result's
    progress.apply(loaded("r1:t0:0", 9))
    progress.apply(loaded("r1:redriven:0", 9))
    assert stats(progress) == EXPECTED
    assert progress.elapsed(T0 + timedelta(hours=1)) == timedelta(seconds=30)


def test_elapsed_takes_the_clock_from_the_caller() -> None:
    progress = fold("r1", one_shot_run())
    assert progress.elapsed(T0 + timedelta(seconds=12)) == timedelta(seconds=12)
    assert RunProgress(run_id="r1").elapsed(T0) is None


# ---------------------------------------------------------------------------------------------- bytes
def test_loaded_bytes_are_summed_once_per_batch_the_applied_delivery_winning() -> None:
    events = [
        loaded("b0", 5, size=100),
        loaded("b0", 5, size=100),  # redelivered, applied again (Kafka sink after a crash): counted once
        loaded("b1", 5, applied=False),  # a stand-in that does not know its bytes...
        loaded("b1", 5, size=40),  # ...replaced by the applied delivery, which does
    ]
    for order in itertools.permutations(events):
        total = fold("r1", order).stage(Stage.LOAD).total
        assert (total.bytes, total.batches, total.rows_out) == (140, 2, 10), order


def test_loaded_bytes_are_unknown_when_one_counted_batch_did_not_say() -> None:
    # A partial sum would pass for the whole: one batch of a sink that does not know makes the total None.
    legacy = ev(EventKind.BATCH_LOADED, Stage.LOAD, batch_id="b1", rows_out=3)  # no payload: before v4
    for unknown in (loaded("b1", 3), legacy):
        total = fold("r1", [loaded("b0", 5, size=100), unknown]).stage(Stage.LOAD).total
        assert (total.bytes, total.bytes_written, total.rows_out) == (None, 100, 8)
    assert fold("r1", []).stage(Stage.LOAD).total.bytes == 0  # nothing loaded: nothing written


def test_a_stored_fold_of_before_bytes_reads_as_unknown_only_where_unknown() -> None:
    stored = fold("r1", [loaded("b0", 5, size=100)]).model_dump(mode="json")
    assert stored["stages"]["load"]["total"][-2:] == [100, 0]
    stored["stages"]["load"]["total"] = stored["stages"]["load"]["total"][:6]  # as stored before
    restored = RunProgress.model_validate(stored)
    assert restored.stage(Stage.LOAD).total.bytes == 0  # no byte counted yet, none unknown
    restored.apply(loaded("b1", 1, size=7))
    assert restored.stage(Stage.LOAD).total.bytes == 7


# -------------------------------------------------------------------------------------------- storage
def test_the_fold_survives_a_json_round_trip_and_continues_identically() -> None:
    events = one_shot_run()
    head, tail = events[:6], [*events[6:], loaded("r1:t0:0", 9, applied=False), violation("r1:t1:0", 2)]
    stored = json.dumps(fold("r1", head).model_dump(mode="json"))
    restored = RunProgress.model_validate(json.loads(stored))
    assert restored == fold("r1", head)
    assert restored.apply_all(tail) == fold("r1", events + tail[-2:])
