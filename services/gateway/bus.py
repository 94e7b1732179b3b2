"""The gateway's Kafka side, on aiokafka.

Why aiokafka and not confluent-kafka (which the threaded services use): the gateway is an asyncio HTTP
server, and every request waits for a Kafka acknowledgement before it answers. aiokafka's ``send`` returns
an asyncio future resolved on the event loop, so thousands of requests can wait concurrently without a
thread each and without bridging librdkafka's delivery callbacks (which fire on its own poll thread) back
into the loop. The producer is idempotent with ``acks=all`` (``KafkaClients.aio_producer``): an
acknowledged request is on every in-sync replica, and the producer's own retries never duplicate it. Both
clients come from ``KafkaClients``, so they carry the gateway's SASL/TLS settings.

One group-less consumer follows the gateway's topics (no consumer group: every replica must see
everything, and watching must not commit anyone's offsets); which ones, from where, and what each record
does to the views is ``services.gateway.follower``. ``caught_up_to`` lets a replica wait until it has read
its own record (a delivery's claim: how replicas agree on which copy of a delivery came first). Reads for
one request (a dead letter's payload, a page of results) have readers of their own
(``services.gateway.reading``).

The bus is ready once the producer is connected and the consumer has read definitions, keys, requests and
deliveries up to the end offsets they had at start-up (before that, a replay could be taken for a new
delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.gateway import reading
from services.gateway.configuration import GatewaySettings
from services.gateway.deliveries import DeliveryBook
from services.gateway.exceptions import GatewayTransientError
from services.gateway.follower import apply_record
from services.gateway.freshness import KeysFreshness
from services.gateway.metrics import PUBLISH_FAILURES, PUBLISH_SECONDS
from services.gateway.reading import TopicPage
from services.gateway.records import RecordBook
from services.gateway.state import DefinitionCatalog, RunLedger, RunView
from shared import metrics
from shared.auth.keys import KeyRing
from shared.contracts import Contract
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import Topics
from shared.kafka.types import Serde
from shared.processing import RetryPolicy
from shared.tracing import propagation

_log = logging.getLogger(__name__)
C = TypeVar("C", bound=Contract)


@dataclass(frozen=True)
class RecordPosition:
    """Where an acknowledged record landed."""

    topic: str
    partition: int
    offset: int


class Bus(Protocol):
    """What the HTTP layer needs from Kafka (a fake in unit tests)."""

    @property
    def ready(self) -> bool: ...

    async def publish(self, topic: str, key: str, value: Contract | None) -> RecordPosition:
        """Return once Kafka acknowledged the record (``None`` = tombstone); raise
        ``GatewayTransientError`` when it did not within the send timeout."""

    async def caught_up_to(self, position: RecordPosition) -> None:
        """Return once the follower has applied every record of the position's partition up to and
        including it (read-your-writes, in log order); ``GatewayTransientError`` after the send timeout."""

    async def read_at(self, position: RecordPosition, contract: type[C]) -> C | None:
        """The record at ``position``, decoded; ``None`` when it is gone (retention) or not a ``contract``;
        ``GatewayTransientError`` when Kafka did not answer within the send timeout."""

    async def publish_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> RecordPosition:
        """``publish`` for bytes already encoded (a dead letter's payload re-driven as it was)."""

    async def read_page(
        self,
        topic: str,
        start: Mapping[int, int] | Literal["end"] | None,
        limit: int,
        contract: type[Contract],
    ) -> TopicPage:
        """Up to ``limit`` records of ``topic`` from ``start`` (``services.gateway.reading.read_page``)."""


@dataclass(frozen=True)
class GatewayTopics:
    requests: str
    definitions: str
    events: str
    results: str
    api_keys: str
    audit: str
    deliveries: str
    alerts: str
    dead_letters: str
    lag: str

    @classmethod
    def of(cls, settings: GatewaySettings) -> GatewayTopics:
        return cls(
            requests=settings.topic(Topics.REQUESTS),
            definitions=settings.topic(Topics.DEFINITIONS),
            events=settings.topic(Topics.EVENTS),
            results=settings.topic(Topics.RESULTS),
            api_keys=settings.topic(Topics.API_KEYS),
            audit=settings.topic(Topics.AUDIT),
            deliveries=settings.topic(Topics.DELIVERIES),
            alerts=settings.topic(Topics.ALERTS),
            dead_letters=settings.topic(Topics.DEAD_LETTERS),
            lag=settings.topic(Topics.LAG),
        )


class KafkaBus:
    def __init__(
        self,
        settings: GatewaySettings,
        serde: Serde,
        *,
        ledger: RunLedger,
        catalog: DefinitionCatalog,
        runs: RunView,
        keys: KeyRing,
        deliveries: DeliveryBook,
        records: RecordBook | None = None,
    ):
        self.settings = settings
        self.serde = serde
        self.clients = KafkaClients(settings.kafka)
        self.topics = GatewayTopics.of(settings)
        self.ledger = ledger
        self.catalog = catalog
        self.runs = runs
        self.keys = keys
        self.deliveries = deliveries
        self.records = records or RecordBook(settings.records_per_tenant)
        self._producer: AIOKafkaProducer | None = None
        self._caught_up = False
        # Next offset to apply, per partition, and callers waiting for the follower to pass an offset.
        self._applied: dict[TopicPartition, int] = {}
        self._waiters: list[tuple[TopicPartition, int, asyncio.Future[None]]] = []

    @property
    def ready(self) -> bool:
        return self._producer is not None and self._caught_up

    # ------------------------------------------------------------------------------------ producing
    async def publish(self, topic: str, key: str, value: Contract | None) -> RecordPosition:
        producer = self._producer
        if producer is None:
            raise GatewayTransientError("not connected to Kafka yet")
        payload = None if value is None else self.serde.encode(value)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.send_timeout_s
        started = time.perf_counter()
        try:
            # send() itself may wait for metadata (a new topic, a broker down): bound it too.
            # the current trace context (a request's span: shared.tracing) travels with the record
            # (timeout scopes, not wait_for: wait_for wraps each await in a task of its own, three records
            # per delivery)
            headers = propagation.inject() or None
            async with asyncio.timeout_at(deadline):
                ack = await producer.send(topic, payload, key=key.encode(), headers=headers)
        except (TimeoutError, KafkaError) as exc:
            PUBLISH_FAILURES.labels(topic).inc()
            raise GatewayTransientError(f"Kafka did not take the record: {exc!r}") from exc
        try:
            # shield: on timeout the send stays queued; if it lands later the followers read it, so the
            # sender's retry is still recognised as a copy.
            async with asyncio.timeout_at(max(deadline, loop.time() + 0.001)):
                landed = await asyncio.shield(ack)
        except (TimeoutError, KafkaError) as exc:
            PUBLISH_FAILURES.labels(topic).inc()
            raise GatewayTransientError(f"Kafka did not acknowledge the record: {exc!r}") from exc
        PUBLISH_SECONDS.labels(topic).observe(time.perf_counter() - started)
        metrics.MESSAGES_PRODUCED.labels(topic).inc()
        return RecordPosition(topic, landed.partition, landed.offset)

    async def publish_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> RecordPosition:
        producer = self._producer
        if producer is None:
            raise GatewayTransientError("not connected to Kafka yet")
        try:
            landed = await asyncio.wait_for(
                # with the request's trace context, as ``publish`` sends it
                producer.send_and_wait(topic, value, key=key, headers=[*headers, *propagation.inject()]),
                self.settings.send_timeout_s,
            )
        except (TimeoutError, KafkaError) as exc:
            PUBLISH_FAILURES.labels(topic).inc()
            raise GatewayTransientError(f"Kafka did not take the record: {exc!r}") from exc
        metrics.MESSAGES_PRODUCED.labels(topic).inc()
        return RecordPosition(topic, landed.partition, landed.offset)

    async def read_at(self, position: RecordPosition, contract: type[C]) -> C | None:
        # a reader of its own for the one record: the follower's position must not move
        tp = TopicPartition(position.topic, position.partition)
        reader = self.clients.aio_consumer(group_id=None)
        timeout = self.settings.send_timeout_s
        return await reading.read_at(reader, self.serde, tp, position.offset, contract, timeout)

    async def read_page(
        self,
        topic: str,
        start: Mapping[int, int] | Literal["end"] | None,
        limit: int,
        contract: type[Contract],
    ) -> TopicPage:
        producer = self._producer
        if producer is None:
            raise GatewayTransientError("not connected to Kafka yet")
        reader = self.clients.aio_consumer(group_id=None)
        timeout = self.settings.send_timeout_s
        # the producer's partitions_for waits for metadata, unlike the consumer's
        partitions = producer.partitions_for
        return await reading.read_page(reader, self.serde, topic, partitions, start, limit, contract, timeout)

    async def caught_up_to(self, position: RecordPosition) -> None:
        tp = TopicPartition(position.topic, position.partition)
        if self._applied.get(tp, -1) > position.offset:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (tp, position.offset, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                await waiter  # cancelled on timeout: nothing else awaits it, and it leaves the list below
        except TimeoutError as exc:
            raise GatewayTransientError(
                f"the gateway did not read back its own record in time: {position}"
            ) from exc
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _passed(self, tp: TopicPartition, next_offset: int) -> None:
        self._applied[tp] = next_offset
        for entry in [w for w in self._waiters if w[0] == tp and w[1] < next_offset]:
            self._waiters.remove(entry)
            if not entry[2].done():
                entry[2].set_result(None)

    # ------------------------------------------------------------------------------------ lifecycle
    async def run(self, stopped: asyncio.Event) -> None:
        """Connect, catch up, then follow the topics until ``stopped``. A Kafka failure on the way (a broker
        restart, a topic not created yet) makes the gateway unready and starts over after a backoff; the
        views are rebuilt from the topics, so starting over is always safe."""
        backoff = RetryPolicy(max_attempts=None)
        failures = 0
        while not stopped.is_set():
            try:
                await self._run_once(stopped)
                return
            except KafkaError as exc:
                failures += 1
                _log.warning("kafka failure, reconnecting (%r)", exc)
                await _wait(stopped, backoff.delay(failures))

    async def _run_once(self, stopped: asyncio.Event) -> None:
        producer = await self._connect_producer(stopped)
        if producer is None:
            return
        consumer = self.clients.aio_consumer(group_id=None)
        try:
            await consumer.start()
            ends = await self._assign(consumer, producer)
            await self._follow(consumer, ends, stopped)
        finally:
            self._caught_up = False
            self._producer = None
            await consumer.stop()
            await producer.stop()

    async def _connect_producer(self, stopped: asyncio.Event) -> AIOKafkaProducer | None:
        backoff = RetryPolicy(max_attempts=None)
        attempt = 0
        while not stopped.is_set():
            producer = self.clients.aio_producer()
            try:
                await asyncio.wait_for(producer.start(), self.settings.connect_timeout_s)
                self._producer = producer
                _log.info("connected to %s", self.settings.kafka.bootstrap_servers)
                return producer
            except (TimeoutError, KafkaError) as exc:
                attempt += 1
                _log.warning("kafka not reachable yet (%r)", exc)
                await producer.stop()
                await _wait(stopped, backoff.delay(attempt))
        return None

    async def _assign(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer
    ) -> dict[TopicPartition, int]:
        """Assign every partition of the followed topics at its start position; return the end offsets that
        must be reached before the gateway is ready (definitions, keys, requests and deliveries)."""
        t = self.topics
        partitions: dict[str, list[TopicPartition]] = {}
        followed = (
            t.definitions,
            *self._key_topics(),
            t.requests,
            t.deliveries,
            *self._history_topics(),
            t.lag,
        )
        for topic in followed:
            numbers = await producer.partitions_for(topic)  # waits for metadata, unlike the consumer's
            partitions[topic] = [TopicPartition(topic, p) for p in sorted(numbers)]
        everything = [tp for tps in partitions.values() for tp in tps]
        consumer.assign(everything)
        # re-read from scratch: a tombstone compacted away while we were disconnected must not leave a ghost
        self.catalog.clear()
        self.keys.clear()  # also forgets freshness: a valid key gets 503, not 401, until re-read
        compacted = [tp for topic in (t.definitions, *self._key_topics()) for tp in partitions[topic]]
        await consumer.seek_to_beginning(*compacted, *partitions[t.lag])
        now = time.time()
        since_ms = dict.fromkeys(
            (tp for topic in (t.requests, *self._history_topics()) for tp in partitions[topic]),
            int((now - self.settings.history_s) * 1000),
        )
        since_ms.update(
            dict.fromkeys(partitions[t.deliveries], int((now - self.settings.delivery_memory_s) * 1000))
        )
        found = await consumer.offsets_for_times(since_ms)
        ends = await consumer.end_offsets(everything)
        for tp in since_ms:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
        self._applied.clear()
        return {tp: ends[tp] for tp in (*compacted, *partitions[t.requests], *partitions[t.deliveries])}

    def _history_topics(self) -> tuple[str, ...]:
        """Followed from ``history_s`` back, for the views of runs, alerts and dead letters."""
        t = self.topics
        return (t.events, t.results, t.alerts, t.dead_letters)

    def _key_topics(self) -> tuple[str, ...]:
        return (self.topics.api_keys,) if self.settings.auth_api_keys else ()

    async def _follow(
        self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], stopped: asyncio.Event
    ) -> None:
        pending = dict(ends)
        key_partitions = [tp for tp in ends if tp.topic in self._key_topics()]
        freshness = KeysFreshness(self.keys, key_partitions)
        while not stopped.is_set():
            await freshness.check(consumer)
            if not self._caught_up:
                for tp, end in list(pending.items()):
                    if await consumer.position(tp) >= end:
                        del pending[tp]
                if not pending:
                    self._caught_up = True
                    _log.info(
                        "caught up: %d definitions, %d recent run ids, %d remembered deliveries",
                        len(self.catalog.all()),
                        len(self.ledger),
                        len(self.deliveries),
                    )
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                for record in records:
                    apply_record(self, tp.topic, record)
                if records:
                    self._passed(tp, records[-1].offset + 1)
                metrics.MESSAGES_CONSUMED.labels(tp.topic).inc(len(records))


async def _wait(stopped: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, waking early on stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), seconds)
