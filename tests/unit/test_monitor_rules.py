"""The monitor's alert rules as pure functions: when each fires, that it fires once per run, that replayed
events do not double-count, and the consumer-lag arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.monitor.lag import lag_by_topic
from services.monitor.rules import (
    RunRecord,
    Thresholds,
    apply_event,
    dead_letter_growth_alert,
    is_progress,
    result_alert,
    should_forget,
    stuck_alert,
)
from shared.contracts import (
    AlertKind,
    ErrorInfo,
    EventKind,
    PipelineResult,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunStatus,
    Severity,
    Stage,
)
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = Thresholds(stuck_after_s=300, quality_max_failed_fraction=0.1, dead_letter_max_per_window=5)


def event(kind: EventKind, stage: Stage = Stage.ORCHESTRATE, at_s: float = 0, **kw: object) -> RunEvent:
    return RunEvent(run_id="r1", kind=kind, stage=stage, at=T0 + timedelta(seconds=at_s), **kw)


def fold(*events: RunEvent, record: RunRecord | None = None) -> tuple[RunRecord, list[AlertKind]]:
    raised: list[AlertKind] = []
    for ev in events:
        record, alerts = apply_event(record, ev, partition=3, thresholds=LIMITS)
        raised += [a.kind for a in alerts]
    assert record is not None
    return record, raised


def violation(batch: str, failed: int, on_fail: str = "quarantine", rule: str = "quality[0]") -> RunEvent:
    payload = QualityViolation(rule=rule, on_fail=OnFail(on_fail), failed_rows=failed, reason="amount < 0")
    return event(EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, batch_id=batch, payload=payload)


def accepted(pipeline: str = "orders", stuck_after_s: int | None = None) -> RunEvent:
    payload = RunAccepted(pipeline=pipeline, stuck_after_s=stuck_after_s)
    return event(EventKind.RUN_ACCEPTED, payload=payload)


def transformed(batch: str, rows: int, at_s: float = 0) -> RunEvent:
    return event(
        EventKind.BATCH_TRANSFORMED, Stage.TRANSFORM, at_s, batch_id=batch, rows_in=rows, rows_out=rows
    )


# ----------------------------------------------------------------------------------------- the record
def test_accepted_sets_pipeline_threshold_and_partition() -> None:
    record, raised = fold(accepted("orders", 42))
    assert (record.pipeline, record.stuck_after_s, record.partition, raised) == ("orders", 42, 3, [])
    assert record.last_progress == T0.timestamp()


@pytest.mark.parametrize(
    "first",
    [
        event(EventKind.RUN_ACCEPTED),
        accepted(stuck_after_s=None),
        accepted(stuck_after_s=0),
        event(EventKind.RUN_ACCEPTED, details={"stuck_after_s": "soon"}),  # as a v3 writer could say it
    ],
)
def test_threshold_falls_back_to_the_setting(first: RunEvent) -> None:
    record, _ = fold(first)
    assert record.stuck_after_s == LIMITS.stuck_after_s


def test_events_before_accepted_still_create_the_run() -> None:
    record, _ = fold(event(EventKind.TASK_STARTED, Stage.EXTRACT, at_s=5))
    assert (record.run_id, record.pipeline, record.stuck_after_s) == ("r1", None, LIMITS.stuck_after_s)


def test_worker_events_are_progress_orchestrator_bookkeeping_is_not() -> None:
    assert is_progress(event(EventKind.BATCH_LOADED, Stage.LOAD))
    assert is_progress(event(EventKind.TASK_RETRIED))
    assert not is_progress(event(EventKind.RUN_FINALIZED))
    record, _ = fold(event(EventKind.RUN_ACCEPTED), event(EventKind.TASK_STARTED, Stage.EXTRACT, at_s=60))
    record, _ = fold(event(EventKind.AGENT_DECISION, at_s=200), record=record)
    assert record.last_progress == T0.timestamp() + 60


def test_an_older_event_never_moves_progress_back() -> None:
    record, _ = fold(
        event(EventKind.TASK_STARTED, Stage.EXTRACT, at_s=60), event(EventKind.TASK_STARTED, Stage.LOAD)
    )
    assert record.last_progress == T0.timestamp() + 60


def test_finished_run_drops_counters_and_ignores_late_events() -> None:
    record, _ = fold(transformed("b1", 10), violation("b1", 2), event(EventKind.RUN_FINISHED, at_s=9))
    assert record.finished and record.finished_at == T0.timestamp() + 9
    assert record.progress.stage(Stage.TRANSFORM).seen == {} and record.progress.failures == {}
    late, raised = fold(violation("b9", 100, on_fail="fail"), record=record)
    assert late == record and raised == []


def test_record_round_trips_through_the_table_format() -> None:
    record, _ = fold(transformed("b1", 10), violation("b1", 9))
    assert RunRecord.from_table(record.to_table()) == record
    assert RunRecord.from_table(None) is None


def test_a_record_stored_by_an_earlier_monitor_keeps_its_state_and_counts() -> None:
    """The changelog of a monitor upgraded while runs are in flight holds records of the old form."""
    stored = {
        "run_id": "r1",
        "partition": 3,
        "pipeline": "orders",
        "stuck_after_s": 42.0,
        "last_progress": T0.timestamp(),
        "alerted": ["RUN_STUCK"],
        "batch_rows": {"b1": 100},
        "failed_rows": {"b1|quality[0]": 8, "b2|quality[0]": 50},
        "settled_rows": 900,
        "settled_failed_rows": 3,
    }
    record = RunRecord.from_table(stored)
    assert record is not None and (record.pipeline, record.stuck_after_s, record.alerted) == (
        "orders",
        42.0,
        (AlertKind.RUN_STUCK,),
    )
    assert (record.checked_rows, record.failed_checked_rows) == (1000, 11)
    # counting goes on: b2's rows arrive, b1 replayed changes nothing; 61 of 2000 stays under the limit
    record, raised = fold(transformed("b2", 1000), transformed("b1", 100), record=record)
    assert (record.checked_rows, record.failed_checked_rows, raised) == (2000, 61, [])
    finished = RunRecord.from_table({**stored, "finished": True, "finished_at": T0.timestamp()})
    assert finished is not None and finished.finished and stuck_alert(finished, T0.timestamp() + 1e6) is None


# -------------------------------------------------------------------------------------------- quality
def test_quality_alerts_when_failed_fraction_exceeds_the_limit() -> None:
    _, raised = fold(violation("b1", 5), transformed("b1", 100))  # 5 %: fine
    assert raised == []
    _, raised = fold(violation("b1", 11), transformed("b1", 100))  # 11 %
    assert raised == [AlertKind.QUALITY_THRESHOLD]


def test_quality_counts_a_batch_only_once_its_rows_are_known() -> None:
    # b2's failures arrive before b2's rows: they must not be set against b1's rows alone.
    record, raised = fold(transformed("b1", 100), violation("b2", 50))
    assert raised == [] and record.failed_checked_rows == 0
    _, raised = fold(transformed("b2", 1000), record=record)
    assert raised == []  # 50 of 1100


def test_replayed_events_do_not_double_count() -> None:
    record, raised = fold(
        violation("b1", 6), transformed("b1", 100), violation("b1", 6), transformed("b1", 100)
    )
    assert raised == [] and (record.failed_checked_rows, record.checked_rows) == (6, 100)


def test_two_rules_on_one_batch_add_up() -> None:
    _, raised = fold(violation("b1", 6, rule="a"), violation("b1", 6, rule="b"), transformed("b1", 100))
    assert raised == [AlertKind.QUALITY_THRESHOLD]


def test_a_fail_rule_alerts_at_once_with_its_reason() -> None:
    record, alerts = apply_event(None, violation("b1", 1, on_fail="fail"), partition=0, thresholds=LIMITS)
    assert [a.kind for a in alerts] == [AlertKind.QUALITY_THRESHOLD]
    assert alerts[0].severity is Severity.WARNING and "amount < 0" in alerts[0].message
    assert alerts[0].labels["rule"] == "quality[0]" and record.alerted == (AlertKind.QUALITY_THRESHOLD,)


def test_quality_alerts_once_per_run() -> None:
    _, raised = fold(
        violation("b1", 50),
        transformed("b1", 100),
        violation("b2", 1, on_fail="fail"),
        violation("b3", 9, "fail"),
    )
    assert raised == [AlertKind.QUALITY_THRESHOLD]


# ---------------------------------------------------------------------------------------------- stuck
def test_stuck_after_the_runs_own_threshold() -> None:
    record, _ = fold(accepted("p", 10))
    now = T0.timestamp()
    assert stuck_alert(record, now + 10) is None
    alert = stuck_alert(record, now + 11)
    assert alert is not None
    assert (alert.kind, alert.severity, alert.run_id, alert.pipeline) == (
        AlertKind.RUN_STUCK,
        "WARNING",
        "r1",
        "p",
    )
    assert "11s" in alert.message


def test_progress_resets_the_stuck_clock() -> None:
    record, _ = fold(accepted(stuck_after_s=10))
    record, _ = fold(event(EventKind.BATCH_LOADED, Stage.LOAD, at_s=8), record=record)
    assert stuck_alert(record, T0.timestamp() + 15) is None


def test_stuck_alerts_once_and_never_for_finished_runs() -> None:
    record, _ = fold(accepted(stuck_after_s=10))
    later = T0.timestamp() + 100
    assert stuck_alert(record.with_alert(AlertKind.RUN_STUCK), later) is None
    finished, _ = fold(event(EventKind.RUN_FINISHED), record=record)
    assert stuck_alert(finished, later) is None


def test_finished_runs_are_forgotten_after_the_retention() -> None:
    running, _ = fold(event(EventKind.RUN_ACCEPTED))
    finished, _ = fold(event(EventKind.RUN_FINISHED), record=running)
    assert not should_forget(running, T0.timestamp() + 10_000, 60)
    assert not should_forget(finished, T0.timestamp() + 60, 60)
    assert should_forget(finished, T0.timestamp() + 61, 60)


# -------------------------------------------------------------------------------------------- results
def result(status: RunStatus, *errors: ErrorInfo) -> PipelineResult:
    return PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="orders",
        status=status,
        started_at=T0,
        finished_at=T0,
        errors=errors,
    )


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.TIMED_OUT])
def test_failed_and_timed_out_runs_alert_critically_with_every_error(status: RunStatus) -> None:
    alert = result_alert(
        result(
            status, ErrorInfo(error_class="A", message="first"), ErrorInfo(error_class="B", message="second")
        )
    )
    assert alert is not None
    assert (alert.kind, alert.severity, alert.run_id, alert.pipeline) == (
        AlertKind.RUN_FAILED,
        Severity.CRITICAL,
        "r1",
        "orders",
    )
    assert "A: first" in alert.message and "B: second" in alert.message and status.value in alert.message


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.REJECTED, RunStatus.CANCELLED])
def test_other_results_do_not_alert(status: RunStatus) -> None:
    assert result_alert(result(status)) is None


# --------------------------------------------------------------------------------------- dead letters
def test_dead_letter_growth_fires_only_when_the_count_crosses_the_limit() -> None:
    fired = [dead_letter_growth_alert(n - 1, n, 5, 3600.0, 300) for n in range(1, 10)]
    assert [n for n, alert in enumerate(fired, start=1) if alert is not None] == [6]
    alert = fired[5]
    assert alert is not None and alert.kind is AlertKind.DEAD_LETTER_GROWTH and alert.run_id is None
    assert alert.labels["window_start"] == "1970-01-01T01:00:00+00:00"


# ------------------------------------------------------------------------------------------------ lag
def test_lag_sums_partitions_and_skips_uncommitted_ones() -> None:
    committed = {("t", 0): 5, ("t", 1): -1001, ("t", 2): 10, ("u", 0): 3}
    ends = {("t", 0): 8, ("t", 1): 50, ("t", 2): 10, ("u", 0): 2}
    assert lag_by_topic(committed, ends) == {"t": 3, "u": 0}


def test_faust_app_honours_the_session_timeout_and_keeps_its_directory_out_of_the_working_dir(
    tmp_path: Path,
) -> None:
    import asyncio

    from services.monitor.app import MonitorApp
    from services.monitor.cluster import InputPartitions
    from services.monitor.configuration import MonitorSettings
    from shared.avro import AvroSerde
    from shared.settings import KafkaSettings

    settings = MonitorSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        session_timeout_ms=6000,
        data_dir=tmp_path / "a" / "b",
    )

    async def build() -> MonitorApp:
        return MonitorApp(settings, AvroSerde(), InputPartitions(events=1, results=1, dead_letters=1))

    conf = asyncio.run(build()).app.conf
    assert conf.broker_session_timeout == 6.0
    assert conf.broker_heartbeat_interval == 2.0
    assert Path(conf.datadir).parent == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()  # faust creates only the app's own directory in it
    assert MonitorSettings().data_dir != Path.cwd()


def test_a_long_continuous_run_keeps_a_bounded_record_and_exact_quality_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.progress import folding as progress  # where the fold reads its window

    monkeypatch.setattr(progress, "MAX_TRACKED_BATCHES", 50)  # the same folding, with fewer events
    MAX_TRACKED_BATCHES = progress.MAX_TRACKED_BATCHES
    batches = MAX_TRACKED_BATCHES * 3
    record: RunRecord | None = None
    for i in range(batches):
        record, _ = apply_event(record, violation(f"b{i}", 1), partition=0, thresholds=LIMITS)
        record, _ = apply_event(record, transformed(f"b{i}", 100), partition=0, thresholds=LIMITS)
    assert record is not None
    assert len(record.progress.stage(Stage.TRANSFORM).seen) == MAX_TRACKED_BATCHES
    assert len(record.progress.failures) <= MAX_TRACKED_BATCHES
    assert record.checked_rows == batches * 100
    assert record.failed_checked_rows == batches
    # a recent batch redelivered still overwrites instead of adding
    replayed, _ = fold(violation(f"b{batches - 1}", 1), transformed(f"b{batches - 1}", 100), record=record)
    assert (replayed.checked_rows, replayed.failed_checked_rows) == (batches * 100, batches)
    # failures of batches never transformed (not counted) are bounded too
    for i in range(MAX_TRACKED_BATCHES * 5):
        record, _ = apply_event(record, violation(f"lost{i}", 1), partition=0, thresholds=LIMITS)
    assert len(record.progress.failures) <= 4 * MAX_TRACKED_BATCHES
    assert record.failed_checked_rows == batches
