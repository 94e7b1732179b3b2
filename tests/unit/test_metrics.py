"""The metrics every service exports: no label that clashes with the scrape target's, bounded label values
for users' pipeline names, and the monitor's per-pipeline figures (runs, duration, freshness, rows, stuck
runs, one dead-letter family)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from services.monitor import metrics as monitor_metrics
from services.monitor.rules import RunRecord
from shared.contracts import (
    BatchLoaded,
    DeadLetter,
    ErrorInfo,
    EventKind,
    Origin,
    PipelineResult,
    RunEvent,
    RunStatus,
    Stage,
)
from shared.metrics import OTHER, UNNAMED, BoundedLabel
from shared.progress import RunProgress
from tests.support.exported_metrics import exported_families

pytestmark = pytest.mark.unit

# Labels Prometheus sets from the scrape target, and look-alikes that would only confuse queries.
TARGET_LABELS = {"instance", "job", "service", "aoetl_service", "aoetl_instance"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_no_series_of_ours_carries_a_target_label() -> None:
    families = exported_families()
    ours = {name: f for name, f in families.items() if name.startswith("aoetl_")}
    assert len(ours) > 30, sorted(families)  # every service's modules were loaded
    clashing = {name: f.labels for name, f in ours.items() if TARGET_LABELS & set(f.labels)}
    assert not clashing
    assert not [name for name in ours if "exported_" in name]


def test_the_dead_letters_have_one_family() -> None:
    names = [name for name in exported_families() if "dead_letter" in name]
    assert names == ["aoetl_dead_letters"]
    assert exported_families()["aoetl_dead_letters"].labels == ("stage", "error_class")


def test_bounded_label_admits_valid_names_up_to_its_cap() -> None:
    label = BoundedLabel(r"[a-z][a-z0-9_\-]{0,62}", 2)
    assert label("orders") == "orders"
    assert label("Orders") == OTHER  # not a pipeline name: never admitted
    assert label("orders\n") == OTHER  # a trailing newline is no loophole
    assert label("x" * 64) == OTHER
    assert label(None) == label("") == UNNAMED
    assert label("billing") == "billing"
    assert label("third") == OTHER  # over the cap
    assert label("orders") == "orders"  # the admitted ones stay


def result(pipeline: str, status: RunStatus, finished: datetime, seconds: float = 30) -> PipelineResult:
    return PipelineResult(
        run_id=f"{pipeline}-{finished.timestamp()}",
        request_id="r",
        pipeline=pipeline,
        status=status,
        started_at=finished - timedelta(seconds=seconds),
        finished_at=finished,
    )


def test_results_count_runs_time_them_and_mark_freshness() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    before = value("aoetl_run_duration_seconds_sum", pipeline="m-fresh", status="COMPLETED")
    monitor_metrics.observe_result(result("m-fresh", RunStatus.COMPLETED, at, seconds=42))
    # Every status of a pipeline is a series from its first result on, failures at 0 included.
    assert (
        REGISTRY.get_sample_value("aoetl_runs_finished_total", {"pipeline": "m-fresh", "status": "FAILED"})
        == 0
    )
    assert value("aoetl_runs_finished_total", pipeline="m-fresh", status="COMPLETED") == 1
    assert value("aoetl_run_duration_seconds_sum", pipeline="m-fresh", status="COMPLETED") - before == 42
    assert value("aoetl_run_duration_seconds_bucket", pipeline="m-fresh", status="COMPLETED", le="60.0") == 1
    assert value("aoetl_pipeline_last_success_timestamp_seconds", pipeline="m-fresh") == at.timestamp()

    # An older success that arrives late does not make the data look staler; a failure does not count.
    monitor_metrics.observe_result(result("m-fresh", RunStatus.COMPLETED, at - timedelta(hours=1)))
    monitor_metrics.observe_result(result("m-fresh", RunStatus.FAILED, at + timedelta(hours=1)))
    assert value("aoetl_pipeline_last_success_timestamp_seconds", pipeline="m-fresh") == at.timestamp()
    assert value("aoetl_runs_finished_total", pipeline="m-fresh", status="FAILED") == 1
    later = at + timedelta(hours=2)
    monitor_metrics.observe_result(result("m-fresh", RunStatus.COMPLETED, later))
    assert value("aoetl_pipeline_last_success_timestamp_seconds", pipeline="m-fresh") == later.timestamp()


def test_rows_are_counted_per_pipeline_and_a_redelivered_batch_adds_none() -> None:
    def loaded(applied: bool) -> RunEvent:
        return RunEvent(
            run_id="r1",
            kind=EventKind.BATCH_LOADED,
            stage=Stage.LOAD,
            batch_id="b1",
            rows_in=10,
            rows_out=10,
            payload=BatchLoaded(applied=applied),
        )

    monitor_metrics.observe_event(loaded(applied=True), "m-rows")
    monitor_metrics.observe_event(loaded(applied=False), "m-rows")
    assert value("aoetl_rows_total", pipeline="m-rows", stage="load", direction="out") == 10
    monitor_metrics.observe_event(loaded(applied=True), None)  # an event before the run's start
    assert value("aoetl_rows_total", pipeline=UNNAMED, stage="load", direction="out") >= 10


def test_dead_letters_count_by_stage_and_bounded_error_class() -> None:
    def letter(error_class: str) -> DeadLetter:
        origin = Origin(topic="t", partition=0, offset=1)
        return DeadLetter(
            origin=origin,
            stage=Stage.LOAD,
            error=ErrorInfo(error_class=error_class, message="m"),
            payload=b"",
        )

    before = value("aoetl_dead_letters_total", stage="load", error_class=OTHER)
    monitor_metrics.observe_dead_letter(letter("SinkWriteError"))
    monitor_metrics.observe_dead_letter(letter("no such class; DROP TABLE x"))
    assert value("aoetl_dead_letters_total", stage="load", error_class="SinkWriteError") >= 1
    assert value("aoetl_dead_letters_total", stage="load", error_class=OTHER) - before == 1


def test_stuck_runs_gauge_goes_back_to_zero() -> None:
    def record(run_id: str, last_progress: float, finished: bool = False) -> RunRecord:
        progress = RunProgress(run_id=run_id)
        progress.pipeline = "m-stuck"
        return RunRecord(
            run_id=run_id,
            partition=0,
            stuck_after_s=60,
            last_progress=last_progress,
            finished=finished,
            progress=progress,
        )

    now = 10_000.0
    idle, busy, done = record("a", now - 61), record("b", now - 10), record("c", now - 500, finished=True)
    monitor_metrics.observe_tracked_runs([idle, busy, done], now)
    assert value("aoetl_runs_stuck", pipeline="m-stuck") == 1
    assert value("aoetl_monitor_runs_tracked", state="active") == 2
    assert value("aoetl_monitor_runs_tracked", state="finished") == 1
    monitor_metrics.observe_tracked_runs([busy, done], now)
    assert REGISTRY.get_sample_value("aoetl_runs_stuck", {"pipeline": "m-stuck"}) == 0
