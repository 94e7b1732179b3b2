"""Alerts published exactly once: the alerts topic itself says what was already sent.

The window this closes: the monitor's tables remember which alerts a run raised, but a table change
reaches its changelog (and faust commits the input offset) only *after* the alert it records was
published. A crash in between restores a table without the alert and processes the event again, or a
later event of the run finds the rule unfired: the alert went out twice. Ordering cannot close that
window (the other order loses alerts instead), so the table is no longer what decides.

Each rule fires at most once per *identity* (``alert_identity``): a run's alert of one kind, the
dead-letter growth of one window. Before an alert is sent, ``ExactlyOnceAlerts`` checks the alerts topic
for its identity, read ``read_committed`` up to its end; the check and the send are made safe against
every other writer (a previous life of this process, another replica, a zombie) by one Kafka
transactional id for all alerts of the app:

1. a producer with that id is started: its InitProducerId fences every earlier holder of the id (the
   broker aborts their open transaction, or first completes one already committing);
2. the topic is read to its last stable offset: every alert committed before the fence is known now;
3. an alert already there is not sent again (``publish`` returns False);
4. otherwise it is sent in a transaction. The commit succeeds only if nobody fenced this producer since
   step 1, and whoever fences it later sees the alert in their step 2. A failed or fenced attempt drops the
   producer and starts again at step 1 (its transaction is then resolved, one way or the other, before
   the check).

So a ``read_committed`` consumer of ``aoetl.alerts`` sees each identity once (aborted attempts are
invisible to it). One id for all alerts costs little: alerts are rare, and a replica's producer is
fenced (and rebuilt) only when another replica alerted in between. It also means no other transaction
can hold the topic's last stable offset back while we read it. Every replica keeps the identities of all
alerts in the topic's retention (a short string each).

Why not faust's ``processing_guarantee="exactly_once"``: faust-streaming derives a record's transactional
id from the partition the record is *sent to* (``TransactionManager.send``), which only works when every
output is co-partitioned with the inputs; the alerts topic has one partition and the changelogs follow
their tables. Its issue tracker also reports sends outside transactions (faust-streaming/faust#177),
duplicates after a kill despite exactly_once (#517) and crashes on rebalance (#323).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.monitor.exceptions import MonitorTransientError
from shared.avro import AvroDecodeError
from shared.contracts import Alert
from shared.kafka.clients import KafkaClients
from shared.kafka.types import Serde
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

# An alert's transaction is one record and a commit. Short, so that a process killed inside one holds the
# topic's last stable offset (what read_committed consumers can reach) back for seconds, not a minute,
# when no restarted monitor fences it sooner.
TRANSACTION_TIMEOUT_MS = 15_000
ATTEMPTS = 3


def alert_identity(alert: Alert) -> str:
    """What a rule raises at most once: a run's alert of a kind, or (no run) the alert of one window."""
    scope = alert.run_id if alert.run_id is not None else alert.labels.get("window_start", "")
    return f"{alert.kind.value}|{scope}"


class ExactlyOnceAlerts:
    """Publishes alerts on ``topic``, each identity once. Create it inside the running loop; ``close`` it.
    Publishing is serialised (one transaction at a time on one producer); every call is bounded by
    ``timeout_s`` and raises ``MonitorTransientError`` after ``ATTEMPTS`` failed attempts."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, transactional_id: str, serde: Serde, *, timeout_s: float
    ):
        self._clients = KafkaClients(kafka)  # producer and reader carry the same security settings
        self._topic = topic
        self._transactional_id = transactional_id
        self._serde = serde
        self._timeout = timeout_s
        self._lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._sent: set[str] = set()

    async def publish(self, alert: Alert) -> bool:
        """Send ``alert`` unless its identity is on the topic already; True when this call sent it."""
        identity = alert_identity(alert)
        value = self._serde.encode(alert)
        key = (alert.run_id or alert.kind.value).encode()
        async with self._lock:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return await self._attempt(identity, key, value)
                except (KafkaError, TimeoutError, OSError) as exc:
                    # The transaction's outcome may be unknown: the next producer's fence resolves it.
                    await self._drop_producer()
                    if attempt == ATTEMPTS:
                        raise MonitorTransientError(f"alert {identity} not published: {exc!r}") from exc
                    _log.warning("alert %s, attempt %d: %r; starting over", identity, attempt, exc)
        raise AssertionError("unreachable")  # pragma: no cover (the loop returns or raises)

    async def _attempt(self, identity: str, key: bytes, value: bytes) -> bool:
        """Steps 1 to 4 of the module docstring; each Kafka call bounded by the timeout."""
        producer = await asyncio.wait_for(self._fenced_producer(), self._timeout)
        await self._catch_up(producer)
        if identity in self._sent:
            return False
        await asyncio.wait_for(self._send(producer, key, value), self._timeout)
        self._sent.add(identity)  # read-your-writes: the reader may not have reached it yet
        return True

    async def _send(self, producer: AIOKafkaProducer, key: bytes, value: bytes) -> None:
        async with producer.transaction():  # commits on leaving, aborts on an exception
            await producer.send_and_wait(self._topic, value=value, key=key)

    async def _fenced_producer(self) -> AIOKafkaProducer:
        # Used only by ``_attempt``, and dropped on any failure of it: aiokafka marks a fenced producer
        # fatal and would refuse its next transaction with an assertion, not an error.
        if self._producer is None:
            producer = self._clients.aio_producer(
                transactional_id=self._transactional_id,
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                request_timeout_ms=int(self._timeout * 1000),
            )
            self._producer = producer  # set first: a start that fails half-way is stopped by the caller
            await producer.start()  # InitProducerId: the fence (step 1)
        return self._producer

    async def _catch_up(self, producer: AIOKafkaProducer) -> None:
        """Learn every alert committed up to the topic's current last stable offset. Bounded by progress,
        not by a total time: the first catch-up of a process reads the topic's whole retention."""
        reader = await asyncio.wait_for(self._started_reader(producer), self._timeout)
        # read_committed: the last stable offset (the position reaches it past the commit markers too)
        ends = await asyncio.wait_for(reader.end_offsets(self._partitions), self._timeout)
        loop = asyncio.get_running_loop()
        progressed_at, last = loop.time(), list[int]()
        while True:
            positions = [
                await asyncio.wait_for(reader.position(tp), self._timeout) for tp in self._partitions
            ]
            if all(at >= ends[tp] for at, tp in zip(positions, self._partitions, strict=True)):
                return
            if positions != last:
                progressed_at, last = loop.time(), positions
            elif loop.time() - progressed_at > self._timeout:
                raise TimeoutError(f"{self._topic} not read to its end: stuck at {positions} of {ends}")
            batches = await reader.getmany(*self._partitions, timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._learn(record.value)

    def _learn(self, value: bytes | None) -> None:
        try:
            alert = self._serde.decode(value or b"", Alert)
        except AvroDecodeError as exc:
            _log.warning("skipping an undecodable record on %s: %s", self._topic, exc)
            return
        self._sent.add(alert_identity(alert))

    async def _started_reader(self, producer: AIOKafkaProducer) -> AIOKafkaConsumer:
        """A group-less reader of every partition of the topic, from the beginning, kept for good: each
        catch-up reads only what is new."""
        if self._reader is None:
            reader = self._clients.aio_consumer(group_id=None, request_timeout_ms=int(self._timeout * 1000))
            try:
                await reader.start()
                numbers = await producer.partitions_for(self._topic)  # waits for the topic's metadata
                partitions = [TopicPartition(self._topic, p) for p in sorted(numbers)]
                reader.assign(partitions)
                await reader.seek_to_beginning(*partitions)
            except BaseException:
                with contextlib.suppress(Exception):
                    await reader.stop()
                raise
            self._reader, self._partitions = reader, partitions
        return self._reader

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # it is discarded; the error that made us drop it counts
                await asyncio.wait_for(producer.stop(), self._timeout)

    async def close(self) -> None:
        await self._drop_producer()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.stop(), self._timeout)
