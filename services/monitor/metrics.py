"""Prometheus metrics the monitor derives from the platform's topics (on the process-wide registry, so the
shared /metrics endpoint serves them next to the runtime's own)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.contracts import Alert, BatchLoaded, DeadLetter, EventKind, PipelineResult, RunEvent

RUNS_FINISHED = Counter(
    "aoetl_runs_finished", "Pipeline runs finished, by pipeline and status", ["pipeline", "status"]
)
STAGE_ROWS = Counter(
    "aoetl_stage_rows",
    "Rows seen per stage and direction (in|out|rejected), from SPLIT_EXTRACTED, STREAM_PROGRESS and BATCH_*"
    " events (a redelivered batch's BATCH_LOADED, not applied again, adds none)",
    ["stage", "direction"],
)
BATCH_LATENCY = Histogram(
    "aoetl_batch_latency_seconds",
    "Processing time of one batch (or split) as reported by the stage's event",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DEAD_LETTERS_SEEN = Counter(
    "aoetl_dead_letters_seen",
    "Dead letters on the dead-letter topic, by stage and error class",
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
UNDECODABLE = Counter(
    "aoetl_monitor_undecodable", "Messages the monitor could not decode (skipped)", ["topic"]
)

_BATCH_KINDS = {
    EventKind.SPLIT_EXTRACTED: ("out",),
    EventKind.STREAM_PROGRESS: ("out",),
    EventKind.BATCH_TRANSFORMED: ("in", "out", "rejected"),
    EventKind.BATCH_LOADED: ("in", "out"),
    EventKind.BATCH_FAILED: ("in",),
}


def observe_event(event: RunEvent) -> None:
    directions = _BATCH_KINDS.get(event.kind)
    if directions is None or (event.kind is EventKind.STREAM_PROGRESS and not event.batch_id):
        return  # a continuous run's heartbeat carries no batch
    loaded = event.payload_as(BatchLoaded)
    if loaded is None or loaded.applied:  # a redelivered batch's rows were not loaded again
        figures = {"in": event.rows_in, "out": event.rows_out, "rejected": event.rows_rejected}
        for direction in directions:
            STAGE_ROWS.labels(event.stage.value, direction).inc(figures[direction])
    if event.kind in (EventKind.SPLIT_EXTRACTED, EventKind.BATCH_TRANSFORMED, EventKind.BATCH_LOADED):
        BATCH_LATENCY.labels(event.stage.value).observe(event.duration_ms / 1000)


def observe_result(result: PipelineResult) -> None:
    RUNS_FINISHED.labels(result.pipeline or "", result.status.value).inc()


def observe_dead_letter(dead_letter: DeadLetter) -> None:
    DEAD_LETTERS_SEEN.labels(dead_letter.stage.value, dead_letter.error.error_class).inc()


def observe_alert(alert: Alert) -> None:
    ALERTS.labels(alert.kind.value, alert.severity.value).inc()
