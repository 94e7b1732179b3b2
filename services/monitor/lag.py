"""Consumer lag per group and topic: committed offsets against the end of each partition.

Read without joining the groups (no consumer joins them, so checking never triggers a rebalance of
the services it watches). End offsets are read ``read_committed`` (the last stable offset), the position
a transactional consumer can reach. A partition the group never committed is not counted: for a new group
that is "not started", not lag.

Note: after a transaction the commit marker occupies one offset past the last record, so a fully caught-up
transactional consumer whose producer wrote to the same partition can show a lag of 1 there.

Read with aiokafka, not librdkafka: librdkafka's admin client aborts the whole process (assertion in
``rd_kafka_enq_once_del_source_return``) when a ListConsumerGroupOffsets request meets a broker restart
(confluentinc/librdkafka#3663, #4605); the fault soak saw it take the monitor down.

What is measured is also published (``LagPublisher``): one ``ConsumerLag`` per group on the compacted lag
topic, for the gateway's console (services share nothing but Kafka). A plain idempotent producer, not a
transaction: a record is a measurement that the next check replaces, so a duplicate or a lost one costs
nothing but its age, which the record states. Every replica measures and publishes; the latest wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.monitor.exceptions import MonitorTransientError
from shared.contracts import ConsumerLag
from shared.kafka.clients import KafkaClients
from shared.kafka.types import Serde
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
    """Committed offsets from the admin API, end offsets from a group-less ``read_committed`` consumer
    (it never joins a group). Create it inside the running loop; ``close`` it when done."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 10.0):
        self._clients = KafkaClients(kafka)  # both clients carry the same security settings
        self._timeout = timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._reader = self._clients.aio_consumer(group_id=None, request_timeout_ms=int(timeout_s * 1000))
        self._reader_started = False

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._reader_started:
            await self._reader.stop()
            self._reader_started = False

    async def measure(self, group: str) -> dict[str, int]:
        """Lag per topic of ``group``; empty when the group has committed nothing (or does not exist)."""
        committed = await self._committed(group)
        if not committed:
            return {}
        return lag_by_topic(committed, await self._ends(committed))

    async def measure_all(self, groups: Iterable[str]) -> dict[str, dict[str, int] | MonitorTransientError]:
        results: dict[str, dict[str, int] | MonitorTransientError] = {}
        for group in groups:
            try:
                results[group] = await self.measure(group)
            except MonitorTransientError as exc:
                results[group] = exc
        return results

    async def _committed(self, group: str) -> dict[Partition, int]:
        try:
            if self._admin is None:
                admin = self._clients.aio_admin(request_timeout_ms=int(self._timeout * 1000))
                await asyncio.wait_for(admin.start(), self._timeout)
                self._admin = admin
            offsets = await asyncio.wait_for(self._admin.list_consumer_group_offsets(group), self._timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._forget_admin()
            raise MonitorTransientError(f"committed offsets of group {group!r}: {exc!r}") from exc
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}

    async def _ends(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        try:
            if not self._reader_started:
                await asyncio.wait_for(self._reader.start(), self._timeout)
                self._reader_started = True
            ends = await asyncio.wait_for(self._reader.end_offsets(wanted), self._timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise MonitorTransientError(f"end offsets of {len(wanted)} partition(s): {exc!r}") from exc
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def _forget_admin(self) -> None:
        """A failed admin client is rebuilt on the next check (its connection may be the broken part)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception:  # it is being discarded; the original error is what matters
                _log.debug("closing a failed admin client", exc_info=True)


class LagPublisher:
    """Publishes each measured group's ``ConsumerLag`` on ``topic`` (key group). Create it inside the
    running loop; ``close`` it. A failed send is logged and left to the next check."""

    def __init__(self, kafka: KafkaSettings, topic: str, serde: Serde, timeout_s: float = 10.0):
        self._clients = KafkaClients(kafka)
        self._topic = topic
        self._serde = serde
        self._timeout = timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, measured: Mapping[str, Mapping[str, int]]) -> bool:
        """One record per group; True when all were acknowledged."""
        if not measured:
            return True
        try:
            if self._producer is None:
                producer = self._clients.aio_producer(request_timeout_ms=int(self._timeout * 1000))
                self._producer = producer  # first: a start that fails half-way is dropped below
                await asyncio.wait_for(producer.start(), self._timeout)
            sends = [
                await self._producer.send(
                    self._topic,
                    self._serde.encode(ConsumerLag(group=group, topics=dict(topics))),
                    key=group.encode(),
                )
                for group, topics in measured.items()
            ]
            await asyncio.wait_for(asyncio.gather(*sends), self._timeout)
            return True
        except (KafkaError, TimeoutError, OSError) as exc:
            _log.warning("consumer lag not published (next check tries again): %r", exc)
            await self.close()
            return False

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self._timeout)
            except Exception:  # discarded; the error that made us drop it is what matters
                _log.debug("closing the lag producer", exc_info=True)
