"""Prometheus metrics shared by every service, on the process-wide default registry (which also carries
the process and GC collectors). Names start with ``aoetl_``; the ``service`` label lets one scrape config
and one dashboard cover all six services.
"""

from __future__ import annotations

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

MESSAGES_CONSUMED = Counter(
    "aoetl_messages_consumed", "Messages taken from Kafka for processing", ["service", "topic"]
)
MESSAGES_PRODUCED = Counter(
    "aoetl_messages_produced",
    "Messages produced to Kafka (transactional outputs count once committed)",
    ["service", "topic"],
)
PROCESSING_ERRORS = Counter(
    "aoetl_processing_errors",
    "Failures while decoding or handling a message, by error class",
    ["service", "error_class", "transient"],
)
DEAD_LETTERS = Counter(
    "aoetl_dead_letters", "Messages routed to the dead-letter topic, by origin topic", ["service", "topic"]
)
BATCH_SECONDS = Histogram(
    "aoetl_batch_seconds",
    "Wall time to process one polled batch, decode to commit",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TRANSACTIONS = Counter(
    "aoetl_transactions", "Kafka transactions ended, by outcome (committed|aborted)", ["service", "outcome"]
)
RETRIES = Counter("aoetl_retries", "Batches re-run after a transient failure", ["service"])
ASSIGNED_PARTITIONS = Gauge(
    "aoetl_assigned_partitions", "Input partitions currently assigned to this instance", ["service"]
)
SERVICE_INFO = Info("aoetl_service", "Which service and instance this process is")


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The exposition body and its content type, for the /metrics endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
