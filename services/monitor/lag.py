"""Consumer lag per group and topic: committed offsets against the end of each partition.

Read with the admin API only (no consumer joins the groups, so checking never triggers a rebalance of
the services it watches). End offsets are read ``read_committed`` (the last stable offset), the position
a transactional consumer can reach. A partition the group never committed is not counted: for a new group
that is "not started", not lag.

Note: after a transaction the commit marker occupies one offset past the last record, so a fully caught-up
transactional consumer whose producer wrote to the same partition can show a lag of 1 there.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from services.monitor.exceptions import MonitorTransientError
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

Partition = tuple[str, int]


def lag_by_topic(committed: Mapping[Partition, int], ends: Mapping[Partition, int]) -> dict[str, int]:
    """Sum of ``end - committed`` over the partitions the group committed (negative offsets mean 'none')."""
    lag: dict[str, int] = defaultdict(int)
    for (topic, partition), offset in committed.items():
        end = ends.get((topic, partition))
        if offset < 0 or end is None:
            continue
        lag[topic] += max(end - offset, 0)
    return dict(lag)


class LagProbe:
    """Blocking (librdkafka) calls: run ``measure`` in a worker thread from async code."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 10.0):
        self._admin = AdminClient(kafka.to_confluent(), logger=_log)
        self._timeout = timeout_s

    def measure(self, group: str) -> dict[str, int]:
        """Lag per topic of ``group``; empty when the group has committed nothing (or does not exist)."""
        committed = self._committed(group)
        if not committed:
            return {}
        return lag_by_topic(committed, self._ends(committed))

    def measure_all(self, groups: Iterable[str]) -> dict[str, dict[str, int] | MonitorTransientError]:
        results: dict[str, dict[str, int] | MonitorTransientError] = {}
        for group in groups:
            try:
                results[group] = self.measure(group)
            except MonitorTransientError as exc:
                results[group] = exc
        return results

    def _committed(self, group: str) -> dict[Partition, int]:
        request = [ConsumerGroupTopicPartitions(group)]
        try:
            answer = self._admin.list_consumer_group_offsets(request, request_timeout=self._timeout)[group]
            offsets = answer.result(timeout=self._timeout)
        except (KafkaException, TimeoutError) as exc:
            raise MonitorTransientError(f"committed offsets of group {group!r}: {exc}") from exc
        return {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions or []}

    def _ends(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        request = {TopicPartition(topic, partition): OffsetSpec.latest() for topic, partition in partitions}
        try:
            futures = self._admin.list_offsets(
                request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self._timeout
            )
            return {
                (tp.topic, tp.partition): f.result(timeout=self._timeout).offset for tp, f in futures.items()
            }
        except (KafkaException, TimeoutError) as exc:
            raise MonitorTransientError(f"end offsets of {len(request)} partition(s): {exc}") from exc
