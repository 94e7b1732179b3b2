"""Prometheus metrics the monitor derives from the platform's topics (on the process-wide registry, so the
shared /metrics endpoint serves them next to the runtime's own).

The monitor is where per-pipeline figures come from: it reads every run's events, results and dead
letters, so its counters are the fleet's (no summing over services that would count a run twice). With
several monitor replicas each one counts the runs of its partitions: sum over instances (and take ``max``
of the last-success timestamp) to see a pipeline whole.

``pipeline`` values go through ``shared.metrics.pipeline_label`` (valid names only, at most
``MAX_PIPELINE_LABELS`` per process), and the error classes of dead letters through a bounded label too:
a dead letter's record could be written by anyone allowed to write the topic.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from services.monitor.rules import RunRecord, is_stuck
from shared.contracts import Alert, BatchLoaded, DeadLetter, EventKind, PipelineResult, RunEvent, RunStatus
from shared.metrics import BoundedLabel, pipeline_label

RUNS_FINISHED = Counter(
    "aoetl_runs_finished", "Pipeline runs finished, by pipeline and status", ["pipeline", "status"]
)
RUN_SECONDS = Histogram(
    "aoetl_run_duration_seconds",
    "Wall time of a finished run, from its start to its result, by pipeline and status",
    ["pipeline", "status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
LAST_SUCCESS = Gauge(
    "aoetl_pipeline_last_success_timestamp_seconds",
    "When the pipeline's latest COMPLETED run finished (Unix seconds): its data's freshness",
    ["pipeline"],
)
ROWS = Counter(
    "aoetl_rows",
    "Rows per pipeline, stage and direction (in|out|rejected), from SPLIT_EXTRACTED, STREAM_PROGRESS and"
    " BATCH_* events (a redelivered batch's BATCH_LOADED, not applied again, adds none)",
    ["pipeline", "stage", "direction"],
)
BATCH_LATENCY = Histogram(
    "aoetl_batch_latency_seconds",
    "Processing time of one batch (or split) as reported by the stage's event",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DEAD_LETTERS = Counter(
    "aoetl_dead_letters",
    "Dead letters on the dead-letter topic, by the stage that wrote them and error class: every path that"
    " dead-letters (task loops, continuous pipelines, topic triggers, alert deliveries that exhausted their"
    " retries) is counted here, once",
    ["stage", "error_class"],
)
ALERTS = Counter("aoetl_alerts", "Alerts published by the monitor", ["kind", "severity"])
ALERTS_NOT_REPEATED = Counter(
    "aoetl_alerts_not_repeated",
    "Alerts raised again (e.g. after a restart) and not sent: they were on the alerts topic already",
    ["kind"],
)
CONSUMER_LAG = Gauge(
    "aoetl_consumer_lag",
    "Messages not yet committed by a consumer group (high watermark - committed offset), per topic",
    ["group", "topic"],
)
LAG_CHECK_FAILURES = Counter("aoetl_consumer_lag_check_failures", "Lag checks that failed", ["group"])
RUNS_TRACKED = Gauge(
    "aoetl_monitor_runs_tracked", "Runs in this instance's runs table (active partitions)", ["state"]
)
RUNS_STUCK = Gauge(
    "aoetl_runs_stuck",
    "Unfinished runs of this instance's partitions without progress for longer than their threshold",
    ["pipeline"],
)
UNDECODABLE = Counter(
    "aoetl_monitor_undecodable", "Messages the monitor could not decode (skipped)", ["topic"]
)

# Exception class names (dotted when qualified); anything else, or past the cap, is "_other".
error_class_label = BoundedLabel(r"[A-Za-z_][A-Za-z0-9_.]{0,99}", 200)

_BATCH_KINDS = {
    EventKind.SPLIT_EXTRACTED: ("out",),
    EventKind.STREAM_PROGRESS: ("out",),
    EventKind.BATCH_TRANSFORMED: ("in", "out", "rejected"),
    EventKind.BATCH_LOADED: ("in", "out"),
    EventKind.BATCH_FAILED: ("in",),
}
_last_success: dict[str, float] = {}
_stuck_pipelines: set[str] = set()
_known_pipelines: set[str] = set()


def _pipeline(name: str | None) -> str:
    """The bounded label of a pipeline, with its run counters created at 0 the first time it is seen:
    a counter that first appears at 1 shows no ``increase()`` to Prometheus, so its first failure would
    go unnoticed (the failure rule also covers a series born at 1, for a run that fails at once)."""
    label = pipeline_label(name)
    if label not in _known_pipelines:
        _known_pipelines.add(label)
        for status in RunStatus:
            RUNS_FINISHED.labels(label, status.value)
    return label


def observe_event(event: RunEvent, pipeline: str | None) -> None:
    """Count a run event's rows (``pipeline`` as the monitor's record of the run knows it)."""
    label = _pipeline(pipeline)
    directions = _BATCH_KINDS.get(event.kind)
    if directions is None or (event.kind is EventKind.STREAM_PROGRESS and not event.batch_id):
        return  # a continuous run's heartbeat carries no batch
    loaded = event.payload_as(BatchLoaded)
    if loaded is None or loaded.applied:  # a redelivered batch's rows were not loaded again
        figures = {"in": event.rows_in, "out": event.rows_out, "rejected": event.rows_rejected}
        for direction in directions:
            ROWS.labels(label, event.stage.value, direction).inc(figures[direction])
    if event.kind in (EventKind.SPLIT_EXTRACTED, EventKind.BATCH_TRANSFORMED, EventKind.BATCH_LOADED):
        BATCH_LATENCY.labels(event.stage.value).observe(event.duration_ms / 1000)


def observe_result(result: PipelineResult) -> None:
    """Count a run's result (once per run: the caller skips redeliveries)."""
    label, status = _pipeline(result.pipeline), result.status.value
    RUNS_FINISHED.labels(label, status).inc()
    elapsed = (result.finished_at - result.started_at).total_seconds()
    RUN_SECONDS.labels(label, status).observe(max(elapsed, 0.0))
    if result.status is RunStatus.COMPLETED:
        finished = result.finished_at.timestamp()
        # Results of one pipeline's runs can arrive out of order (different partitions): never go back.
        if finished > _last_success.get(label, float("-inf")):
            _last_success[label] = finished
            LAST_SUCCESS.labels(label).set(finished)


def observe_dead_letter(dead_letter: DeadLetter) -> None:
    DEAD_LETTERS.labels(dead_letter.stage.value, error_class_label(dead_letter.error.error_class)).inc()


def observe_alert(alert: Alert) -> None:
    ALERTS.labels(alert.kind.value, alert.severity.value).inc()


def observe_tracked_runs(records: Iterable[RunRecord], now: float) -> None:
    """Set the runs-table gauges from the records of this instance's active partitions."""
    states: Tally[str] = Tally(active=0, finished=0)
    stuck: Tally[str] = Tally()
    for record in records:
        states["finished" if record.finished else "active"] += 1
        if is_stuck(record, now):
            stuck[pipeline_label(record.pipeline)] += 1
    for state, count in states.items():
        RUNS_TRACKED.labels(state).set(count)
    # A pipeline whose runs are no longer stuck reads 0 rather than disappearing, so an alert on it
    # resolves instead of going stale.
    for pipeline in _stuck_pipelines | set(stuck):
        RUNS_STUCK.labels(pipeline).set(stuck[pipeline])
    _stuck_pipelines.update(stuck)
