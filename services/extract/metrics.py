"""Metrics of the extract service's continuous pipelines (on the process-wide registry, next to the
``aoetl_*`` metrics every service has). Their ``pipeline`` label goes through ``shared.metrics.
pipeline_label``, so users' pipeline names cannot grow the series without bound.

Dead letters of unreadable source events are not counted here: the monitor counts every dead letter from
the dead-letter topic (``aoetl_dead_letters_total``), one family for all the paths that write them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.metrics import pipeline_label

STREAM_RECORDS = Counter(
    "aoetl_stream_records", "Source events read by continuous pipelines (committed)", ["pipeline"]
)
STREAM_BATCHES = Counter("aoetl_stream_batches", "Batches continuous pipelines produced", ["pipeline"])
STREAM_LAG = Gauge(
    "aoetl_stream_lag_records", "Source events not yet read, per partition", ["pipeline", "partition"]
)


def stream_committed(pipeline: str, records: int, batches: int) -> None:
    """A continuous pipeline's transaction committed ``batches`` batches of ``records`` source events."""
    label = pipeline_label(pipeline)
    STREAM_RECORDS.labels(label).inc(records)
    STREAM_BATCHES.labels(label).inc(batches)


def stream_lag(pipeline: str, partition: int, lag: int) -> None:
    STREAM_LAG.labels(pipeline_label(pipeline), str(partition)).set(lag)
