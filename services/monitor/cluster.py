"""What the monitor must learn of the cluster before it builds its topology: the partition counts of its
input topics (each faust table is co-partitioned with the topic that writes it, so the counts must match
the topics the stack created, never faust's defaults) and the replication rule of its own topics
(changelogs, the housekeeping topic), from the one rule every topic of the system follows. Both are read
once, at start, off the event loop (``services.monitor.service``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException

from services.monitor.configuration import MonitorSettings
from services.monitor.exceptions import MonitorError, MonitorTransientError
from shared.kafka.admin import TopicAdminError, cluster_replication
from shared.kafka.clients import KafkaClients
from shared.kafka.replication import Replication
from shared.kafka.topics import Topics


@dataclass(frozen=True)
class InputPartitions:
    events: int
    results: int
    dead_letters: int


def input_partitions(settings: MonitorSettings) -> InputPartitions:
    """Partition counts of the input topics, which the tables must match. The topics must exist: the
    stack's ``ensure_topics`` creates them; faust would otherwise create them with its own defaults."""
    admin = KafkaClients(settings.kafka).admin()
    names = {t: settings.topic(t) for t in (Topics.EVENTS, Topics.RESULTS, Topics.DEAD_LETTERS)}
    try:
        existing = admin.list_topics(timeout=settings.kafka_timeout_s).topics
    except KafkaException as exc:
        raise MonitorTransientError(
            f"cannot list topics on {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc
    missing = [name for name in names.values() if name not in existing]
    if missing:
        raise MonitorError(f"input topics {missing} do not exist; create them first (shared.kafka.admin)")
    counts = {t: len(existing[name].partitions) for t, name in names.items()}
    return InputPartitions(counts[Topics.EVENTS], counts[Topics.RESULTS], counts[Topics.DEAD_LETTERS])


def monitor_replication(settings: MonitorSettings) -> Replication:
    """The replication rule of the faust topics: the settings' factor, else the cluster's broker count."""
    try:
        return cluster_replication(
            settings.kafka, replication_factor=settings.replication_factor, timeout=settings.kafka_timeout_s
        )
    except TopicAdminError as exc:
        raise MonitorTransientError(str(exc)) from exc


def faust_broker(settings: MonitorSettings) -> dict[str, Any]:
    """faust's broker URLs and credentials, from the one client factory (SASL and TLS included)."""
    return KafkaClients(settings.kafka).faust_broker()
