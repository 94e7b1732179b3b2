"""Prometheus metrics shared by every service, on the process-wide default registry (which also carries
the process and GC collectors). Names start with ``aoetl_``.

No series of ours carries a label named ``instance``, ``service`` or ``job`` (nor a look-alike such as
``aoetl_service``): which service and which replica a series comes from is the scrape target's identity
(``job`` and ``instance``, set by Prometheus). A label of the same name would clash with those and be
renamed ``exported_*`` or, with ``honor_labels``, overwrite them.

Label values are bounded. Most come from code (stages, outcomes, error classes, platform topics); the one
that comes from users, the pipeline name, goes through ``pipeline_label``, which admits only valid names
and at most ``MAX_PIPELINE_LABELS`` distinct ones per process (see ``BoundedLabel``).
"""

from __future__ import annotations

import re
import threading
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from shared.spec.models import PIPELINE_NAME

# Label values that no pipeline can be named (pipeline names start with a lower-case letter).
OTHER = "_other"
UNNAMED = "_unnamed"
MAX_PIPELINE_LABELS = 500


class BoundedLabel:
    """Turns a user-supplied label value into one of a bounded set.

    Every distinct label value is a series per metric, kept by this process and by Prometheus for as long
    as it lives, so values that users choose must not grow without bound. A value is kept as it is when it
    matches ``pattern`` and it is one of the first ``limit`` distinct values this process has seen; any
    other is reported as ``_other`` (the total stays right, only its breakdown is coarser), and a missing
    one as ``_unnamed``. ``limit`` is per process, so a fleet's series stay bounded too: a replica admits
    at most ``limit`` values per metric.
    """

    def __init__(self, pattern: str, limit: int):
        self._pattern = re.compile(pattern)
        self._limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()  # the stream workers and the HTTP thread label concurrently

    def __call__(self, value: str | None) -> str:
        if not value:
            return UNNAMED
        if value in self._admitted:
            return value
        if not self._pattern.fullmatch(value):
            return OTHER
        with self._lock:
            if value not in self._admitted and len(self._admitted) >= self._limit:
                return OTHER
            self._admitted.add(value)
        return value


pipeline_label = BoundedLabel(PIPELINE_NAME, MAX_PIPELINE_LABELS)

MESSAGES_CONSUMED = Counter("aoetl_messages_consumed", "Messages taken from Kafka for processing", ["topic"])
MESSAGES_PRODUCED = Counter(
    "aoetl_messages_produced",
    "Messages produced to Kafka (transactional outputs count once committed)",
    ["topic"],
)
PROCESSING_ERRORS = Counter(
    "aoetl_processing_errors",
    "Failures while decoding or handling a message, by error class",
    ["error_class", "transient"],
)
BATCH_SECONDS = Histogram(
    "aoetl_batch_seconds",
    "Wall time to process one polled batch, decode to commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TRANSACTION_COMMIT_SECONDS = Histogram(
    "aoetl_transaction_commit_seconds",
    "Wall time to commit one Kafka transaction: its offsets added, its records flushed, EndTxn answered",
    # fine at the low end: a commit is a few broker round trips, and at a short stream window a few
    # milliseconds of it are a real share of an event's latency
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TRANSACTIONS = Counter(
    "aoetl_transactions", "Kafka transactions ended, by outcome (committed|aborted)", ["outcome"]
)
PRODUCER_FENCES = Counter(
    "aoetl_producer_fences",
    "Times a transactional producer found itself fenced (replaced, or stopped when it recurs)",
)
RETRIES = Counter("aoetl_retries", "Batches re-run after a transient failure")
ASSIGNED_PARTITIONS = Gauge(
    "aoetl_assigned_partitions", "Input partitions currently assigned to this instance"
)
BUILD_INFO = Info("aoetl_build", "The aoetl release this process runs")


def _version() -> str:
    try:
        return metadata.version("aoetl")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


BUILD_INFO.info({"version": _version()})


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The exposition body and its content type, for the /metrics endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
