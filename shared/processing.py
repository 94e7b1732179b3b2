"""The data-plane loop of extract, transform, load, orchestrator and monitor: consume, decode, handle,
produce, commit - exactly once per hop.

Transactional mode (every stage whose outputs go to Kafka): one Kafka transaction per polled batch holds
all outputs, all dead letters *and* the consumed offsets (``send_offsets_to_transaction`` with the
consumer's group metadata, KIP-447), so a crash anywhere leaves either all of a batch's effects or none,
and a zombie from an old group generation is fenced by the broker. Non-transactional mode (the load stage,
whose sink is outside Kafka): the handler applies its effect idempotently, then its outputs are flushed
and checked, then the offsets are committed synchronously; a crash in between repeats idempotent work.

Error policy, decided only by ``shared.errors.is_transient``:

* undecodable bytes or a terminal handler error -> a ``DeadLetter`` (origin topic/partition/offset/key,
  writer fingerprint, stage, error, raw payload) is produced in the same transaction, so the poison
  message is skipped exactly once and the loop goes on;
* a transient error -> that message and the rest of its partition in this batch are left out of the
  transaction (a handler returns its outputs, so nothing of a failed message was produced and there is
  nothing to abort), the rest of the batch commits, and that partition alone is rewound to the failed
  message and paused for an exponential backoff with jitter, so the other partitions keep flowing; after
  ``RetryPolicy.max_attempts`` failures of the same message it is dead-lettered as transient
  (re-drivable) instead of stalling its partition forever;
* a failed or timed-out commit -> abort, or recreate the producer when abort fails (librdkafka lacks
  KIP-890, so a fresh epoch is the only sure way to fence a half-finished transaction), then rewind to the
  offsets the broker says are committed, which is right whether the commit landed or not;
* a broker error while polling -> log and back off; librdkafka reconnects by itself.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from shared import metrics
from shared.avro.framing import HEADER_LEN, MAGIC
from shared.contracts import Contract, DeadLetter, ErrorInfo, Origin, Stage
from shared.errors import DataError, TerminalError, TransientError, is_transient
from shared.kafka.clients import (
    MAX_MESSAGE_BYTES,
    DeliveryReports,
    flush_checked,
    make_consumer,
    make_producer,
)
from shared.kafka.topics import Topics
from shared.kafka.types import Headers, KafkaConsumer, KafkaProducer, Serde, TransactionalProducer
from shared.logging import log_context
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

TP = tuple[str, int]
_Encoded = tuple[str, str | bytes | None, bytes]
_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
_MAX_ERROR_TEXT = 4000
# librdkafka's send_offsets_to_transaction can block past its own timeout, forever, when the group
# coordinator it cached went away (a broker restart): librdkafka issues #5456 and #5511. The loop waits
# this much longer than the timeout it passed, then gives the producer up.
_HUNG_CALL_GRACE_S = 5.0
# Consecutive failed commits after which the transactional producer is replaced rather than reused: after
# a broker restart librdkafka can keep a transaction-coordinator request queued and never sent, so every
# AddOffsetsToTxn times out on the same client while a fresh client connects at once (seen in the soak).
_RECREATE_AFTER_COMMIT_FAILURES = 2


class Output(NamedTuple):
    """One record a handler wants produced: ``Output(Topics.EVENTS, run_id, RunEvent(...))``."""

    topic: str
    key: str | bytes | None
    value: Contract


@dataclass(frozen=True)
class MessageContext:
    """Where the message being handled came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int | None
    headers: Headers
    attempt: int = 0  # how many times handling this very message failed transiently before


Handler = Callable[[Contract, MessageContext], Iterable[Output]]
# Called when a message is dead-lettered (terminal error, retries exhausted, undecodable): its outputs are
# produced in the same transaction as the dead letter, e.g. an event that tells the orchestrator.
FailureHandler = Callable[[Contract | None, BaseException, MessageContext, bytes], Sequence[Output]]
# Called every ``tick_interval`` seconds on the loop thread; its outputs get a transaction of their own.
TickHandler = Callable[[], Sequence[Output]]
AssignHandler = Callable[[Any, list[TopicPartition]], None]
# Called (with the consumer) after a transaction that held outputs was aborted and the consumer rewound to
# the committed offsets: state a handler derived from the messages of that batch (or a tick) went back
# with it, so a stateful service rebuilds its state from what is committed, as after an assignment.
RollbackHandler = Callable[[Any], None]


@dataclass(frozen=True)
class RetryPolicy:
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    max_attempts: int | None = 20  # then dead-letter; None retries forever

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based): "equal jitter", so retries of many instances
        spread out but none retries immediately."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** max(attempt - 1, 0))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def exhausted(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts


@dataclass(frozen=True)
class LoopConfig:
    service: str  # names the transactional id and the metrics label
    stage: Stage  # written into dead letters
    instance_id: str
    group_id: str
    input_types: Mapping[str, type[Contract]]  # input topic -> the contract its messages carry
    dead_letter_topic: str = Topics.DEAD_LETTERS
    transactional: bool = True
    max_batch: int = 100
    poll_timeout: float = 1.0
    kafka_timeout: float = 30.0  # for init/commit/abort/committed calls
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        return f"{self.service}-{self.instance_id}"


class ProducerFencedError(TerminalError):
    """Another live producer owns our transactional id: this instance is the zombie and must stop."""


class OutputTooLargeError(DataError):
    """A handler output is larger than a Kafka record may be; split the batch smaller."""


class KafkaCommitError(TransientError):
    """Committing offsets or a transaction did not succeed."""


class TransactionCallHungError(KafkaCommitError):
    """A transactional call of the producer did not return long after its own timeout; the producer is
    abandoned (its call still blocks it) and a new one with the same transactional id fences it."""


@dataclass
class _RetryState:
    offset: int
    attempts: int
    resume_at: float | None


class _MidStreamFailure(Exception):
    """Internal: a handler failed after some of its outputs were already produced into the transaction,
    so the whole batch must be aborted; the message is then retried or dead-lettered on redelivery."""

    def __init__(self, tp: TP, offset: int, attempt: int, cause: BaseException):
        super().__init__(f"{tp[0]}[{tp[1]}]@{offset}: {cause!r}")
        self.tp, self.offset, self.attempt, self.cause = tp, offset, attempt, cause


class _RetryLater(Exception):
    """Internal: a transient failure at (tp, offset); that partition is retried after a backoff."""

    def __init__(self, tp: TP, offset: int, attempts: int, cause: BaseException):
        super().__init__(f"{tp[0]}[{tp[1]}]@{offset}: {cause!r}")
        self.tp, self.offset, self.attempts, self.cause = tp, offset, attempts, cause


@dataclass
class _Pending:
    """What one batch has queued so far."""

    next_offsets: dict[TP, TopicPartition] = field(default_factory=dict)
    produced: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)


class ProcessingLoop:
    """Run with ``loop.run(stop_event)`` from the thread that owns it; ``is_ready`` is safe from others."""

    def __init__(
        self,
        kafka: KafkaSettings,
        config: LoopConfig,
        handler: Handler,
        serde: Serde,
        *,
        on_failure: FailureHandler | None = None,
        tick: TickHandler | None = None,
        tick_interval: float = 1.0,
        on_assign: AssignHandler | None = None,
        on_rollback: RollbackHandler | None = None,
    ):
        self.kafka = kafka
        self.config = config
        self.handler = handler
        self.serde = serde
        self.on_failure = on_failure
        self.tick = tick
        self.tick_interval = tick_interval
        self.on_assign = on_assign
        self.on_rollback = on_rollback
        self._next_tick = time.monotonic() + tick_interval
        self._fail_fast: dict[tuple[str, int, int], BaseException] = {}
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._transactional: TransactionalProducer | None = None  # the same object, when transactional
        self._producer_ready = False
        self._assigned_once = False
        self._retries: dict[TP, _RetryState] = {}
        self._poll_failures = 0
        self._commit_failures = 0  # consecutive, of transactional batches
        self._stop = threading.Event()

    # ------------------------------------------------------------------------------------ lifecycle
    def is_ready(self) -> bool:
        """Connected (producer initialised) and a member of the group (first assignment received)."""
        return self._producer_ready and self._assigned_once

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        labels = {"service": self.config.service}
        _log.info(
            "processing %s as group %s (%s)",
            sorted(self.config.input_types),
            self.config.group_id,
            f"transactional id {self.config.transactional_id}"
            if self.config.transactional
            else "at-least-once",
            extra=labels,
        )
        try:
            self._consumer = make_consumer(self.kafka, self.config.group_id, **self.config.consumer_overrides)
            self._consumer.subscribe(
                list(self.config.input_types),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            self._producer = self._new_producer()
            while not stop.is_set():
                self._step()
        finally:
            self._close()

    def _close(self) -> None:
        self._producer_ready = False
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group now instead of after the session timeout
            except Exception:
                _log.exception("closing the consumer failed")
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(self.config.kafka_timeout)
            self._producer = self._transactional = None
        _log.info("processing loop stopped")

    def _new_producer(self) -> KafkaProducer:
        if not self.config.transactional:
            producer: KafkaProducer = make_producer(self.kafka, **self.config.producer_overrides)
            self._producer_ready = True
            return producer
        txn = make_producer(
            self.kafka, transactional_id=self.config.transactional_id, **self.config.producer_overrides
        )
        self._transactional = txn
        attempt = 0
        while True:
            try:
                # Fences any earlier producer with our id and aborts its open transaction.
                txn.init_transactions(self.config.kafka_timeout)
                self._producer_ready = True
                return txn
            except KafkaException as exc:
                error = _kafka_error(exc)
                if error is not None and error.fatal():
                    raise
                attempt += 1
                _log.warning("init_transactions failed (%s); retrying", exc)
                if self._stop.wait(self.config.retry.delay(attempt)):
                    return txn  # stopping: run() exits before using it

    # -------------------------------------------------------------------------------------- polling
    def _step(self) -> None:
        consumer = self._require_consumer()
        self._resume_due()
        try:
            messages = _consume_available(consumer, self.config.max_batch, self._poll_timeout())
        except KafkaException as exc:
            self._on_poll_error(_kafka_error(exc) or exc)
            return
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            else:
                self._on_poll_error(error)
        if records:
            self._poll_failures = 0
            self._process(records)
        if self.tick is not None and time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + self.tick_interval
            self._run_tick(self.tick)

    def _run_tick(self, tick: TickHandler) -> None:
        outputs = tick()
        if not outputs:
            return
        reports = DeliveryReports()
        producer = self._require_producer()
        try:
            if self.config.transactional:
                self._txn().begin_transaction()
            for o in outputs:
                producer.produce(o.topic, value=self._encode(o.value), key=o.key, on_delivery=reports)
            if self.config.transactional:
                self._commit_transaction(self._txn())
            else:
                flush_checked(producer, reports, self.config.kafka_timeout)
        except (KafkaException, TransientError) as exc:
            # The tick's decisions are derived state: the next tick recomputes what still holds.
            _log.warning("tick outputs not committed (%s); they are recomputed next tick", exc)
            self._fail_if_fenced(exc)
            if self.config.transactional:
                self._abort_or_recreate(_kafka_error(exc))
                self._rolled_back()

    def _on_poll_error(self, error: KafkaError | BaseException) -> None:
        if isinstance(error, KafkaError) and error.fatal():
            raise KafkaException(error)
        self._poll_failures += 1
        delay = self.config.retry.delay(self._poll_failures)
        _log.warning("kafka error while polling: %s; backing off %.1fs", error, delay)
        self._stop.wait(delay)

    def _poll_timeout(self) -> float:
        waiting = [s.resume_at for s in self._retries.values() if s.resume_at is not None]
        if not waiting:
            return self.config.poll_timeout
        return max(0.0, min(self.config.poll_timeout, min(waiting) - time.monotonic()))

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, s in self._retries.items() if s.resume_at is not None and s.resume_at <= now]
        if due:
            self._require_consumer().resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                self._retries[tp].resume_at = None

    # ----------------------------------------------------------------------------------- rebalances
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned_once = True
        metrics.ASSIGNED_PARTITIONS.labels(self.config.service).set(len(partitions))
        _log.info("assigned %s", _describe(partitions))
        if self.on_assign is not None:
            self.on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Between batches there is no open transaction and nothing uncommitted, so there is nothing to
        # finish here; only forget retry state (the next owner starts its own count) and un-pause.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        paused = [TopicPartition(*tp) for tp, s in self._retries.items() if tp in revoked and s.resume_at]
        if paused:
            consumer.resume(paused)
        for tp in revoked:
            self._retries.pop(tp, None)
        metrics.ASSIGNED_PARTITIONS.labels(self.config.service).set(0)
        _log.info("revoked %s", _describe(partitions))

    # ----------------------------------------------------------------------------------- one batch
    def _process(self, records: list[Message]) -> None:
        started = time.monotonic()
        service = self.config.service
        for record in records:
            metrics.MESSAGES_CONSUMED.labels(service, record.topic()).inc()
        first_offsets = _first_offsets(records)
        pending = _Pending()
        reports = DeliveryReports()
        producer = self._require_producer()
        failing: dict[TP, _RetryLater] = {}
        try:
            if self.config.transactional:
                self._txn().begin_transaction()
            for record in records:
                tp = _coordinates(record)[:2]
                if tp in failing:
                    continue  # a partition's order holds: its later messages wait for the retry
                try:
                    self._handle_record(record, producer, reports, pending)
                except _MidStreamFailure as broken:
                    self._abort_mid_stream(broken, first_offsets)
                    return
                except _RetryLater as retry:
                    # Nothing of the failed message was produced (outputs are returned, not sent), so the
                    # transaction stays valid for everything else: only this partition goes back.
                    failing[retry.tp] = retry
            if pending.next_offsets:
                self._finish(pending, reports)
            elif self.config.transactional:
                self._abort_or_recreate()  # every message failed: nothing to commit
        except (KafkaException, TransientError) as exc:
            self._on_commit_failure(exc, first_offsets)
            return
        except BaseException:
            # A bug or a shutdown signal inside the batch: never leave the transaction open behind us.
            self._abort_quietly()
            raise
        for failure in failing.values():
            self._schedule_retry(failure)
        if not pending.next_offsets:
            return
        for topic, count in pending.produced.items():
            metrics.MESSAGES_PRODUCED.labels(service, topic).inc(count)
        for topic, count in pending.dead_letters.items():
            metrics.DEAD_LETTERS.labels(service, topic).inc(count)
        if self.config.transactional:
            metrics.TRANSACTIONS.labels(service, "committed").inc()
        metrics.BATCH_SECONDS.labels(service).observe(time.monotonic() - started)
        for tp, position in pending.next_offsets.items():
            state = self._retries.get(tp)
            if state is not None and tp not in failing and position.offset > state.offset:
                del self._retries[tp]

    def _handle_record(
        self, record: Message, producer: KafkaProducer, reports: DeliveryReports, pending: _Pending
    ) -> None:
        topic, partition, offset = _coordinates(record)
        with log_context(topic=topic, partition=partition, offset=offset):
            outputs, attempt = self._outputs_for(record)
            produced_any = False
            try:
                # Outputs are produced as the handler yields them, so a handler that streams a large
                # split holds one batch in memory, not the split.
                for out_topic, key, value in outputs:
                    producer.produce(out_topic, value=value, key=key, on_delivery=reports)
                    produced_any = True
                    if out_topic == self.config.dead_letter_topic and topic != out_topic:
                        pending.dead_letters[topic] += 1
                    pending.produced[out_topic] += 1
            except Exception as exc:
                if not produced_any and not self.config.transactional:
                    raise
                raise _MidStreamFailure((topic, partition), offset, attempt, exc) from exc
        pending.next_offsets[(topic, partition)] = TopicPartition(
            topic, partition, offset + 1, leader_epoch=record.leader_epoch()
        )

    def _outputs_for(self, record: Message) -> tuple[Iterable[_Encoded], int]:
        """Decode, handle, encode. Returns the records to produce (lazily, in transactional mode) and the
        attempt number; raises ``_RetryLater`` to retry. An error before the first output is handled
        here; one after it surfaces while the caller iterates (see ``_MidStreamFailure``)."""
        topic, partition, offset = _coordinates(record)
        raw = record.value()
        if raw is None:
            _log.debug("skipping a tombstone")
            return [], 0
        state = self._retries.get((topic, partition))
        attempt = state.attempts if state is not None and state.offset == offset else 0
        value: Contract | None = None
        context = MessageContext(
            topic, partition, offset, record.key(), _timestamp(record), _headers(record), attempt
        )
        try:
            failed_before = self._fail_fast.pop((topic, partition, offset), None)
            if failed_before is not None:
                value = self.serde.decode(raw, self.config.input_types[topic])
                raise failed_before
            value = self.serde.decode(raw, self.config.input_types[topic])
            with log_context(run_id=getattr(value, "run_id", None)):
                outputs = iter(self.handler(value, context))
                first = next(outputs, None)
                if first is None:
                    return [], attempt
                encoded = ((o.topic, o.key, self._encode(o.value)) for o in itertools.chain([first], outputs))
                if not self.config.transactional:
                    # Without a transaction nothing produced can be taken back: fail before producing.
                    return list(encoded), attempt
                return encoded, attempt
        except Exception as exc:
            transient = is_transient(exc)
            metrics.PROCESSING_ERRORS.labels(self.config.service, type(exc).__name__, str(transient)).inc()
            if transient and not self.config.retry.exhausted(attempt + 1):
                raise _RetryLater((topic, partition), offset, attempt + 1, exc) from exc
            letters = self._dead_letter(record, exc, value, attempt + 1 if transient else attempt)
            return letters + self._failure_outputs(value, exc, context, raw), attempt

    def _failure_outputs(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> list[_Encoded]:
        if self.on_failure is None or context.topic == self.config.dead_letter_topic:
            return []
        try:
            return [
                (o.topic, o.key, self._encode(o.value)) for o in self.on_failure(value, exc, context, raw)
            ]
        except Exception:  # the dead letter alone still keeps the message; never lose the batch over it
            _log.exception("the failure handler failed")
            return []

    def _abort_mid_stream(self, failure: _MidStreamFailure, first_offsets: dict[TP, int]) -> None:
        """Take the whole batch back, then retry the failed message later or dead-letter it next time."""
        self._abort_or_recreate()
        self._rewind(self._committed_positions(first_offsets))
        self._rolled_back()
        exc = failure.cause
        transient = is_transient(exc)
        metrics.PROCESSING_ERRORS.labels(self.config.service, type(exc).__name__, str(transient)).inc()
        if transient and not self.config.retry.exhausted(failure.attempt + 1):
            self._schedule_retry(_RetryLater(failure.tp, failure.offset, failure.attempt + 1, exc))
        else:
            self._fail_fast[(*failure.tp, failure.offset)] = exc

    def _encode(self, value: Contract) -> bytes:
        data = self.serde.encode(value)
        if len(data) > MAX_MESSAGE_BYTES:
            # Caught here, inside the handler's error policy: at produce() time it would fail the batch.
            raise OutputTooLargeError(
                f"{type(value).__name__} of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}"
            )
        return data

    def _dead_letter(
        self, record: Message, exc: Exception, value: Contract | None, attempt: int
    ) -> list[tuple[str, str | bytes | None, bytes]]:
        topic, partition, offset = _coordinates(record)
        run_id = getattr(value, "run_id", None)
        with log_context(run_id=run_id):
            if topic == self.config.dead_letter_topic:
                # Dead-lettering a dead letter would loop forever; the original is already kept there.
                _log.error("dropping an unprocessable dead letter: %r", exc)
                return []
            _log.warning("dead-lettering: %s: %s", type(exc).__name__, exc)
        raw = record.value() or b""
        letter = DeadLetter(
            origin=Origin(
                topic=topic,
                partition=partition,
                offset=offset,
                key=record.key(),
                schema_fingerprint=_writer(raw),
            ),
            stage=self.config.stage,
            error=ErrorInfo(
                error_class=type(exc).__name__,
                message=str(exc)[:_MAX_ERROR_TEXT],
                transient=is_transient(exc),
            ),
            run_id=run_id,
            payload=raw,
            attempt=attempt,
        )
        key = run_id if run_id is not None else record.key()
        return [(self.config.dead_letter_topic, key, self.serde.encode(letter))]

    def _finish(self, pending: _Pending, reports: DeliveryReports) -> None:
        offsets = list(pending.next_offsets.values())
        if self.config.transactional:
            txn = self._txn()
            metadata = self._require_consumer().consumer_group_metadata()
            timeout = self.config.kafka_timeout
            _call_bounded(
                "send_offsets_to_transaction",
                lambda: txn.send_offsets_to_transaction(offsets, metadata, timeout),
                timeout + _HUNG_CALL_GRACE_S,
            )
            self._commit_transaction(txn)  # fails if any record of the transaction was not delivered
            self._commit_failures = 0
        else:
            flush_checked(self._require_producer(), reports, self.config.kafka_timeout)
            self._commit_offsets(offsets)

    def _commit_transaction(self, txn: TransactionalProducer) -> None:
        for attempt in range(1, 4):
            try:
                txn.commit_transaction(self.config.kafka_timeout)
                return
            except KafkaException as exc:
                error = _kafka_error(exc)
                # librdkafka: a retriable commit error may be retried as is; anything else must abort.
                if error is None or not error.retriable() or error.txn_requires_abort() or attempt == 3:
                    raise
                _log.warning("commit_transaction failed retriably (%s); retrying", error)

    def _commit_offsets(self, offsets: list[TopicPartition]) -> None:
        if not offsets:
            return
        result = self._require_consumer().commit(offsets=offsets, asynchronous=False)
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise KafkaCommitError(f"offset commit failed: {failed[0].error}")

    # ------------------------------------------------------------------------------------ failures
    def _schedule_retry(self, retry: _RetryLater) -> None:
        """Rewind the failed partition to the failed message and pause it for the backoff; the loop
        resumes it when the time is up, and the other partitions flow meanwhile."""
        metrics.RETRIES.labels(self.config.service).inc()
        delay = self.config.retry.delay(retry.attempts)
        self._retries[retry.tp] = _RetryState(retry.offset, retry.attempts, time.monotonic() + delay)
        self._require_consumer().pause([TopicPartition(*retry.tp)])
        self._rewind({retry.tp: retry.offset})
        topic, partition = retry.tp
        with log_context(topic=topic, partition=partition, offset=retry.offset):
            _log.warning(
                "transient failure (attempt %d), retrying in %.2fs: %r", retry.attempts, delay, retry.cause
            )

    def _on_commit_failure(self, exc: BaseException, first_offsets: dict[TP, int]) -> None:
        _log.warning("batch could not be committed (%s); rewinding to the committed offsets", exc)
        self._fail_if_fenced(exc)
        if self.config.transactional:
            self._commit_failures += 1
        hung = isinstance(exc, TransactionCallHungError)
        if hung or self._commit_failures >= _RECREATE_AFTER_COMMIT_FAILURES:
            # A hung call still holds the old producer, so abort_transaction would only conflict with it;
            # a producer failing again and again may be stuck on a dead connection. Both: start afresh.
            metrics.TRANSACTIONS.labels(self.config.service, "aborted").inc()
            self._commit_failures = 0
            self._recreate_producer()
        elif self.config.transactional:
            self._abort_or_recreate(_kafka_error(exc))
        self._rewind(self._committed_positions(first_offsets))
        if self.config.transactional:
            self._rolled_back()
        self._poll_failures += 1
        self._stop.wait(self.config.retry.delay(self._poll_failures))

    def _rolled_back(self) -> None:
        """Let the service rebuild its state after an abort; retried (it reads Kafka) until it succeeds,
        because going on with state that counts aborted outputs as sent would lose them for good."""
        attempt = 0
        while self.on_rollback is not None and not self._stop.is_set():
            try:
                self.on_rollback(self._require_consumer())
                return
            except Exception as exc:
                attempt += 1
                _log.warning("rebuilding state after an abort failed (%r); retrying", exc)
                self._stop.wait(self.config.retry.delay(attempt))

    def _abort_or_recreate(self, error: KafkaError | None = None) -> None:
        metrics.TRANSACTIONS.labels(self.config.service, "aborted").inc()
        if error is None or not error.fatal():
            try:
                self._txn().abort_transaction(self.config.kafka_timeout)
                return
            except KafkaException as exc:
                self._fail_if_fenced(exc)
                _log.warning("abort_transaction failed (%s); recreating the producer", exc)
        self._recreate_producer()

    def _recreate_producer(self) -> None:
        """A new producer with the same transactional id: its ``init_transactions`` bumps the epoch, which
        fences the old producer and aborts whatever transaction it left open."""
        self._producer_ready = False
        self._producer = self._new_producer()

    def _abort_quietly(self) -> None:
        if self.config.transactional and self._producer is not None:
            try:
                self._txn().abort_transaction(self.config.kafka_timeout)
            except Exception as exc:  # the transaction may never have begun; the broker times it out anyway
                _log.debug("abort after error failed: %r", exc)

    def _fail_if_fenced(self, exc: BaseException) -> None:
        error = _kafka_error(exc)
        if error is not None and error.code() in _FENCED_CODES:
            raise ProducerFencedError(
                f"transactional id {self.config.transactional_id} is used by a newer producer: {error}"
            ) from exc

    def _committed_positions(self, first_offsets: dict[TP, int]) -> dict[TP, int]:
        """What the group has committed for these partitions; where nothing is committed yet, the batch's
        first offset (the reset position that produced it)."""
        asked = [TopicPartition(t, p) for t, p in first_offsets]
        try:
            committed = self._require_consumer().committed(asked, self.config.kafka_timeout)
        except KafkaException as exc:
            _log.warning("could not read committed offsets (%s); rewinding to the batch start", exc)
            return dict(first_offsets)
        positions = dict(first_offsets)
        for tp in committed:
            if tp.error is None and tp.offset >= 0:
                positions[(tp.topic, tp.partition)] = tp.offset
        return positions

    def _rewind(self, positions: Mapping[TP, int]) -> None:
        consumer = self._require_consumer()
        for (topic, partition), offset in positions.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # The partition was revoked meanwhile: its next owner starts from the committed offset.
                _log.info("not rewinding %s[%d]: %s", topic, partition, exc)

    # -------------------------------------------------------------------------------------- helpers
    def _require_consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "run() creates the consumer"
        return self._consumer

    def _require_producer(self) -> KafkaProducer:
        assert self._producer is not None, "run() creates the producer"
        return self._producer

    def _txn(self) -> TransactionalProducer:
        assert self._transactional is not None, "only transactional loops use transactions"
        return self._transactional


def _consume_available(consumer: KafkaConsumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to ``timeout`` for the first message, then take only what is already fetched.

    ``Consumer.consume(n, timeout)`` waits until it has *n* messages or the timeout passed, so a lone
    message would sit for the whole poll timeout at every hop (measured: ~0.5 s per hop end to end)."""
    first = consumer.consume(1, timeout)
    if not first or max_messages == 1:
        return list(first)
    return [*first, *consumer.consume(max_messages - 1, 0)]


def _call_bounded(what: str, call: Callable[[], None], deadline_s: float) -> None:
    """Run a blocking librdkafka call on a helper thread and stop waiting for it after ``deadline_s``
    (raising ``TransactionCallHungError``); its exception, if it returns in time, is raised here."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    # A daemon: a call that never returns must not keep the process from exiting.
    threading.Thread(target=run, name=f"kafka-{what}", daemon=True).start()
    if not done.wait(deadline_s):
        _log.error("%s did not return within %.0fs; abandoning the producer", what, deadline_s)
        raise TransactionCallHungError(f"{what} did not return within {deadline_s:.0f}s")
    if failure:
        raise failure[0]


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _coordinates(record: Message) -> tuple[str, int, int]:
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    assert topic is not None and partition is not None and offset is not None, "consumed records have these"
    return topic, partition, offset


def _first_offsets(records: Iterable[Message]) -> dict[TP, int]:
    first: dict[TP, int] = {}
    for record in records:
        topic, partition, offset = _coordinates(record)
        first.setdefault((topic, partition), offset)
    return first


def _timestamp(record: Message) -> int | None:
    kind, value = record.timestamp()
    return value if kind != 0 else None  # 0 = TIMESTAMP_NOT_AVAILABLE


def _headers(record: Message) -> Headers:
    headers = record.headers()
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _writer(raw: bytes) -> str | None:
    """The writer-schema fingerprint of a single-object encoded message, if its header is readable."""
    return raw[len(MAGIC) : HEADER_LEN].hex() if len(raw) >= HEADER_LEN and raw.startswith(MAGIC) else None


def _describe(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
