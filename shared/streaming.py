"""Reading user topics exactly once: decoding their events, and a consumer whose group offsets commit in
the same Kafka transaction as what was produced from them.

Used by the continuous pipelines (extract reads a ``kafka`` source) and by the topic triggers (the
orchestrator turns events into pipeline requests). Both keep what they consumed but not yet committed in
memory (a batch being filled, an open trigger window); ``GroupTransactor.commit`` publishes the outputs
*and* the group's new offsets atomically (KIP-447: the consumer's group metadata fences zombies), and
after a failed commit rewinds the consumer to what the group has committed, so the caller rebuilds its
buffers from there. Nothing is ever committed that was not produced, and nothing produced twice survives.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from shared.errors import DataError, TransientError
from shared.kafka.clients import make_consumer, make_producer
from shared.kafka.types import Serde
from shared.processing import ProducerFencedError
from shared.settings import KafkaSettings
from shared.spec.models import StreamFormat

_log = logging.getLogger(__name__)

TP = tuple[str, int]
Encoded = tuple[str, str | bytes | None, bytes]  # topic, key, value
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})


class RestartingWorker:
    """A daemon thread running ``_serve`` until ``stop``. A failure (a fenced producer included) is logged,
    ``_reset`` drops what was consumed but not committed, and ``_serve`` starts over after
    ``restart_delay_s``, rebuilding its ``GroupTransactor``: the group's committed offsets say where to
    resume, so nothing is lost or produced twice."""

    restart_delay_s = 1.0

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget the state built from uncommitted input (the next ``_serve`` reads it again)."""

    def _run(self) -> None:
        name = self._thread.name
        while not self._stop.is_set():
            try:
                self._serve()
            except ProducerFencedError as exc:
                _log.warning("%s fenced (%s); starting over", name, exc)
            except Exception:
                _log.exception("%s failed; starting over", name)
            self._reset()
            self._stop.wait(self.restart_delay_s)


class StreamDecodeError(DataError):
    """An event on a user topic is not a record in the declared format (it is dead-lettered, once)."""


# ------------------------------------------------------------------------------------------ decoding
def decode_event(raw: bytes | None, fmt: StreamFormat, serde: Serde) -> dict[str, Any]:
    """One event as a flat-as-written mapping: a JSON object, or an Avro record (single-object encoded,
    writer schema resolved through the schemas topic or registry) with union branches unwrapped."""
    if raw is None:
        raise StreamDecodeError("a tombstone (null value) is not an event")
    if fmt is StreamFormat.JSON:
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StreamDecodeError(f"not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise StreamDecodeError(f"a JSON event must be an object, got {type(value).__name__}")
        return value
    try:
        record = serde.decode_record(raw, None)
    except Exception as exc:  # every Avro failure is typed by the serde; any of them means poison here
        raise StreamDecodeError(f"not a readable Avro record: {exc}") from exc
    unwrapped: dict[str, Any] = _unwrap(record)
    return unwrapped


def _unwrap(value: Any) -> Any:
    """fastavro names union branches as ``(name, record)``; events want just the record."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return _unwrap(value[1])
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """JSON for what Avro datums hold beyond JSON: times as ISO 8601, bytes as base64, decimals as text."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def coordinates(message: Message) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None, "consumed records have these"
    return topic, partition, offset


# ------------------------------------------------------------------------------------- transactions
class GroupTransactor:
    """A consumer in ``group_id`` and a transactional producer; ``commit`` is all-or-nothing.

    Use from one thread: ``open()``, then ``poll``/``commit`` until done, then ``close()``. Rebalance
    callbacks run inside ``poll`` on that thread, so a caller's ``on_revoke`` may drop its buffers safely.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        transactional_id: str,
        topics: Sequence[str],
        stop: threading.Event,
        timeout: float = 30.0,
        consumer_overrides: Mapping[str, Any] | None = None,
        producer_overrides: Mapping[str, Any] | None = None,
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
    ):
        self.kafka, self.group_id, self.transactional_id = kafka, group_id, transactional_id
        self.topics = list(topics)
        self._stop = stop
        self._timeout = timeout
        self._consumer_overrides = dict(consumer_overrides or {})
        self._producer_overrides = dict(producer_overrides or {})
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._consumer: Any = None
        self._producer: Any = None
        self.assigned: set[TP] = set()

    # ------------------------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        self._producer = self._new_producer()
        self._consumer = make_consumer(self.kafka, self.group_id, **self._consumer_overrides)
        self._consumer.subscribe(
            self.topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leave the group now: the partitions move at once
            except KafkaException as exc:
                _log.warning("closing the consumer of %s failed: %s", self.group_id, exc)
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None

    def _new_producer(self) -> Any:
        producer = make_producer(
            self.kafka, transactional_id=self.transactional_id, **self._producer_overrides
        )
        delay = 0.5
        while True:
            try:
                producer.init_transactions(self._timeout)  # fences an older producer with our id
                return producer
            except KafkaException as exc:
                error = _error(exc)
                if error is not None and error.fatal():
                    raise
                _log.warning("init_transactions for %s failed (%s); retrying", self.transactional_id, exc)
                if self._stop.wait(delay):
                    return producer
                delay = min(delay * 2, 10.0)

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        _log.info("%s assigned %s", self.group_id, sorted(self.assigned))
        if self._on_assign is not None:
            self._on_assign(partitions)

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
        if self._on_revoke is not None:
            self._on_revoke(partitions)

    # -------------------------------------------------------------------------------------- polling
    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` for a first message, then take what is already fetched."""
        first = self._consumer.consume(1, timeout)
        if first and max_messages > 1:
            first += self._consumer.consume(max_messages - 1, 0)
        records = []
        for message in first:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                _log.warning("%s: kafka error while polling: %s", self.group_id, error)
        return records

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        """Low/high offsets as last fetched (no broker round trip), for lag figures."""
        try:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return (low, high) if high >= 0 else None

    # ---------------------------------------------------------------------------------------- commit
    def commit(self, outputs: Sequence[Encoded], offsets: Mapping[TP, int], held: Mapping[TP, int]) -> bool:
        """Produce ``outputs`` and commit the group at ``offsets`` (next offset per partition) in one
        transaction. ``held``: the first offset of everything consumed and not yet committed, per
        partition. On failure the transaction is aborted, those partitions are rewound to what the group
        has committed (the caller must drop what it holds for them) and False is returned; a fenced
        producer raises ``ProducerFencedError`` (another instance owns this work now)."""
        producer = self._producer
        try:
            producer.begin_transaction()
            for topic, key, value in outputs:
                producer.produce(topic, value=value, key=key)
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self._consumer.consumer_group_metadata(),
                    self._timeout,
                )
            producer.commit_transaction(self._timeout)  # fails if any record was not delivered
            return True
        except (KafkaException, TransientError) as exc:
            self._fail_if_fenced(exc)
            _log.warning("%s: transaction not committed (%s); rewinding", self.transactional_id, exc)
            self._abort(_error(exc))
            self.rewind(held)
            return False

    def rewind(self, held: Mapping[TP, int]) -> None:
        """Seek each partition to the group's committed offset (or, with none yet, to ``held``)."""
        if not held:
            return
        positions = dict(held)
        try:
            for tp in self._consumer.committed([TopicPartition(t, p) for t, p in held], self._timeout):
                if tp.error is None and tp.offset >= 0:
                    positions[(tp.topic, tp.partition)] = tp.offset
        except KafkaException as exc:
            _log.warning("could not read committed offsets (%s); rewinding to what was held", exc)
        for (topic, partition), offset in positions.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except (
                KafkaException
            ) as exc:  # revoked meanwhile: the next owner starts from the committed offset
                _log.info("not rewinding %s[%d]: %s", topic, partition, exc)

    def _abort(self, error: KafkaError | None) -> None:
        if error is None or not error.fatal():
            try:
                self._producer.abort_transaction(self._timeout)
                return
            except KafkaException as exc:
                self._fail_if_fenced(exc)
                _log.warning("abort_transaction failed (%s); recreating the producer", exc)
        # librdkafka lacks KIP-890: a fresh epoch is the sure way to end a half-finished transaction.
        self._producer = self._new_producer()

    def _fail_if_fenced(self, exc: BaseException) -> None:
        error = _error(exc)
        if error is not None and error.code() in _FENCED:
            raise ProducerFencedError(
                f"{self.transactional_id} is used by a newer producer: {error}"
            ) from exc


def _error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None
