"""The task loop of the extract, transform, load and orchestrator services: consume, decode,
handle, produce, commit - exactly once per hop.

What makes a batch stick is the loop's ``CommitMode`` (``shared.processing.commit``): one Kafka
transaction per batch holding every output, every dead letter and the consumed offsets, or, for the load
stage, effects first and offsets after. A batch is as much of one poll as the transaction budget allows
(``shared.processing.budget``): small messages share a transaction, a large split gets its own. The
transaction's protections (fencing, bounded calls, commit retry, abort-or-replace, rewind to committed)
live in ``shared.kafka.transaction``, shared with the topic readers of ``shared.streaming``.

Error policy, decided only by ``shared.errors.is_transient`` (per message: ``shared.processing.handling``):

* undecodable bytes or a terminal handler error -> a ``DeadLetter`` (``shared.dead_letters``) produced in
  the same transaction, so the poison message is skipped exactly once and the loop goes on;
* a transient error -> that message and the rest of its partition in this batch are left out (a handler
  returns its outputs, so nothing of a failed message was produced), the rest of the batch commits, and
  that partition alone is rewound and paused for a backoff (``shared.processing.retries``); past the
  attempt cap the message is dead-lettered as transient (re-drivable);
* a failure after a handler's first output was produced -> the whole batch is taken back, and the
  message is retried later or dead-lettered at once when it comes again;
* a failed commit (a producer failing mid-batch included) -> the mode ends what is open, the consumer is
  rewound to the committed offsets, and a stateful handler rebuilds what it derived from the lost batch
  (``on_rollback``); a fenced producer is replaced, and fences that recur stop the service;
* a broker error while polling -> log and back off; librdkafka reconnects by itself. A subscribed topic
  not there yet (``topic_not_there_yet``) is only logged: a backoff would stall all the loop's topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared import metrics
from shared.errors import TransientError, is_transient
from shared.kafka.clients import DeliveryReports, make_consumer
from shared.kafka.messages import (
    KafkaMessage,
    consume_available,
    coordinates,
    first_offsets,
    headers_of,
    topic_not_there_yet,
)
from shared.kafka.transaction import TP, kafka_error, rewind_to_committed
from shared.kafka.types import KafkaConsumer, Serde
from shared.logging import log_context
from shared.processing.commit import CommitMode, commit_mode_for
from shared.processing.handling import MessageHandling, RetryLater
from shared.processing.messages import (
    AssignHandler,
    FailureHandler,
    Handler,
    LoopConfig,
    OutputTooLargeError,
    RollbackHandler,
    TickHandler,
)
from shared.processing.retries import PartitionRetries
from shared.settings import KafkaSettings
from shared.tracing import spans as tracing

_log = logging.getLogger(__name__)

__all__ = ["OutputTooLargeError", "ProcessingLoop"]


class _MidStreamFailure(Exception):
    """A handler failed after some of its outputs were produced into the transaction: the whole batch is
    taken back; the message is then retried or dead-lettered on redelivery."""

    def __init__(self, tp: TP, offset: int, attempt: int, cause: BaseException):
        super().__init__(f"{tp[0]}[{tp[1]}]@{offset}: {cause!r}")
        self.tp, self.offset, self.attempt, self.cause = tp, offset, attempt, cause


@dataclass
class _Pending:
    """What one batch has queued so far."""

    next_offsets: dict[TP, TopicPartition] = field(default_factory=dict)
    produced: Counter[str] = field(default_factory=Counter)
    produced_bytes: int = 0


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
        self.kafka, self.config, self.handler, self.serde = kafka, config, handler, serde
        self.on_failure, self.on_assign, self.on_rollback = on_failure, on_assign, on_rollback
        self.tick, self.tick_interval = tick, tick_interval
        self._next_tick = time.monotonic() + tick_interval
        self._consumer: KafkaConsumer | None = None
        self._stop = threading.Event()
        self._mode_: CommitMode | None = None  # built by run(), with its stop event
        self._assigned_once = False
        self._retries = PartitionRetries(config.retry)
        self._handling = MessageHandling(config, handler, serde, self._retries, on_failure=on_failure)
        self._poll_failures = 0
        self._runs = tracing.RunContexts()

    # ------------------------------------------------------------------------------------ lifecycle
    def is_ready(self) -> bool:
        """Connected (producer initialised) and a member of the group (first assignment received)."""
        return self._mode_ is not None and self._mode_.ready and self._assigned_once

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self._mode_ = commit_mode_for(self.kafka, self.config, stop)
        _log.info(
            "processing %s as group %s (%s)",
            sorted(self.config.input_types),
            self.config.group_id,
            self._mode.description,
            extra={"service": self.config.service},
        )
        try:
            self._consumer = make_consumer(self.kafka, self.config.group_id, **self.config.consumer_overrides)
            self._consumer.subscribe(
                list(self.config.input_types),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            self._mode.open(self._consumer)
            while not stop.is_set():
                self._step()
        finally:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group now instead of after the session timeout
            except Exception:
                _log.exception("closing the consumer failed")
            self._consumer = None
        self._mode.close()
        _log.info("processing loop stopped")

    # -------------------------------------------------------------------------------------- polling
    def _step(self) -> None:
        consumer = self._require_consumer()
        due = self._retries.due(time.monotonic())
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
        try:
            wait = self._retries.wait(time.monotonic(), self.config.poll_timeout)
            messages = consume_available(consumer, self.config.max_batch, wait)
        except KafkaException as exc:
            self._on_poll_error(kafka_error(exc) or exc)
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
        try:
            self._mode.begin()
            for o in outputs:
                headers = self._runs.headers_for(o.value)  # the run's trace, where a message of it was seen
                self._mode.produce(o.topic, self._handling.encode(o.value), o.key, reports, headers)
            self._mode.commit([], reports)
        except (KafkaException, TransientError) as exc:
            # The tick's decisions are derived state: the next tick recomputes what still holds.
            _log.warning("tick outputs not committed (%s); they are recomputed next tick", exc)
            self._mode.fail(exc)
            self._rolled_back()

    def _on_poll_error(self, error: KafkaError | BaseException) -> None:
        if isinstance(error, KafkaError) and error.fatal():
            raise KafkaException(error)
        if topic_not_there_yet(error):
            _log.info("%s; subscribed when it appears", error)
            return
        self._poll_failures += 1
        delay = self.config.retry.delay(self._poll_failures)
        _log.warning("kafka error while polling: %s; backing off %.1fs", error, delay)
        self._stop.wait(delay)

    # ----------------------------------------------------------------------------------- rebalances
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned_once = True
        metrics.ASSIGNED_PARTITIONS.set(len(partitions))
        _log.info("assigned %s", _describe(partitions))
        if self.on_assign is not None:
            self.on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Between batches there is no open transaction and nothing uncommitted, so there is nothing to
        # finish here; only forget retry state (the next owner starts its own count) and un-pause.
        paused = self._retries.forget({(tp.topic, tp.partition) for tp in partitions})
        if paused:
            consumer.resume([TopicPartition(*tp) for tp in paused])
        metrics.ASSIGNED_PARTITIONS.set(0)
        _log.info("revoked %s", _describe(partitions))

    # ----------------------------------------------------------------------------------- one batch
    def _process(self, records: list[Any]) -> None:
        """One poll, in as many transactions as its budget says (``shared.processing.budget``)."""
        polled_at = time.monotonic()
        for record in records:
            metrics.MESSAGES_CONSUMED.labels(record.topic()).inc()
        retrying: set[TP] = set()  # partitions rewound for a retry: their later messages come again
        rest = records
        while rest:
            done = self._process_segment(rest, retrying)
            if done is None:
                return  # taken back or not committed: everything from this segment on was rewound
            rest = rest[done:]
            now = time.monotonic()
            if rest and (self._stop.is_set() or self.config.budget.poll_expired(polled_at, now)):
                self._give_back(rest, retrying)
                return

    def _process_segment(self, records: list[Any], retrying: set[TP]) -> int | None:
        """Handle records into one transaction until the budget is spent; commit; how many were taken.
        None when the segment failed: the consumer was rewound to the committed offsets."""
        opened_at = time.monotonic()
        first = first_offsets(records)  # what a failure rewinds: this segment and the rest of the poll
        pending = _Pending()
        reports = DeliveryReports()
        failing: dict[TP, RetryLater] = {}
        taken = 0
        try:
            self._mode.begin()
            for record in records:
                taken += 1
                tp = coordinates(record)[:2]
                if tp in failing or tp in retrying:
                    continue  # a partition's order holds: its later messages wait for the retry
                try:
                    self._handle_record(record, reports, pending)
                except _MidStreamFailure as broken:
                    self._take_back(broken, first)
                    return None
                except RetryLater as retry:
                    # Nothing of the failed message was produced (outputs are returned, not sent), so the
                    # batch stays valid for everything else: only this partition goes back.
                    failing[retry.tp] = retry
                if self.config.budget.spent(pending.produced_bytes, opened_at, time.monotonic()):
                    break
            if pending.next_offsets:
                self._mode.commit(list(pending.next_offsets.values()), reports)
            else:
                self._mode.discard()  # every message failed or was skipped: nothing to commit
        except (KafkaException, TransientError) as exc:
            self._on_commit_failure(exc, first)
            return None
        except BaseException:
            # A bug or a shutdown signal inside the batch: never leave the transaction open behind us.
            self._mode.abort_quietly()
            raise
        for failure in failing.values():
            self._schedule_retry(failure)
            retrying.add(failure.tp)
        for topic, count in pending.produced.items():
            metrics.MESSAGES_PRODUCED.labels(topic).inc(count)
        if pending.next_offsets:
            metrics.BATCH_SECONDS.observe(time.monotonic() - opened_at)
        for tp, position in pending.next_offsets.items():
            if tp not in failing:
                self._retries.passed(tp, position.offset)
        return taken

    def _give_back(self, records: list[Any], retrying: set[TP]) -> None:
        """Hand the unprocessed rest of a poll back to the consumer: it is fetched again next poll."""
        consumer = self._require_consumer()
        for (topic, partition), offset in first_offsets(records).items():
            if (topic, partition) in retrying:
                continue  # already rewound to its failed message and paused
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: the next owner starts from the committed one
                _log.info("not rewinding %s[%d]: %s", topic, partition, exc)

    def _handle_record(self, record: KafkaMessage, reports: DeliveryReports, pending: _Pending) -> None:
        topic, partition, offset = coordinates(record)
        with (
            log_context(topic=topic, partition=partition, offset=offset),
            # the message's span, current while it is handled and its outputs produced: they carry it
            tracing.consuming(self.config.stage.value, topic, partition, offset, headers_of(record)) as span,
        ):
            outputs, attempt = self._handling.outputs_for(record, lazy=self._mode.streams_outputs, span=span)
            self._runs.remember(span)
            produced_any = producing = False
            try:
                # Outputs are produced as the handler yields them, so a handler that streams a large
                # split holds one batch in memory, not the split.
                for out_topic, key, value, headers in outputs:
                    producing = True
                    self._mode.produce(out_topic, value, key, reports, headers)
                    producing, produced_any = False, True
                    pending.produced[out_topic] += 1
                    pending.produced_bytes += len(value)
            except Exception as exc:
                # The producer failing (fenced, fatal) is the batch's commit failing, never the message's
                # fault; so is a failure before anything of the batch can be taken back: both rewound.
                if producing or not produced_any or not self._mode.streams_outputs:
                    raise
                raise _MidStreamFailure((topic, partition), offset, attempt, exc) from exc
        pending.next_offsets[(topic, partition)] = TopicPartition(
            topic, partition, offset + 1, leader_epoch=record.leader_epoch()
        )

    # ------------------------------------------------------------------------------------ failures
    def _take_back(self, failure: _MidStreamFailure, first: dict[TP, int]) -> None:
        """Take the whole batch back, then retry the failed message later or dead-letter it next time."""
        self._mode.discard()
        rewind_to_committed(self._require_consumer(), first, self.config.kafka_timeout)
        self._rolled_back()
        exc = failure.cause
        transient = is_transient(exc)
        metrics.PROCESSING_ERRORS.labels(type(exc).__name__, str(transient).lower()).inc()
        if transient and not self.config.retry.exhausted(failure.attempt + 1):
            self._schedule_retry(RetryLater(failure.tp, failure.offset, failure.attempt + 1, exc))
        else:
            self._handling.fail_fast[(*failure.tp, failure.offset)] = exc

    def _schedule_retry(self, retry: RetryLater) -> None:
        """Rewind the failed partition to the failed message and pause it for the backoff; the loop
        resumes it when the time is up, and the other partitions flow meanwhile."""
        metrics.RETRIES.inc()
        delay = self._retries.schedule(retry.tp, retry.offset, retry.attempts, time.monotonic())
        consumer = self._require_consumer()
        consumer.pause([TopicPartition(*retry.tp)])
        try:
            consumer.seek(TopicPartition(retry.tp[0], retry.tp[1], retry.offset))
        except KafkaException as exc:  # revoked meanwhile: the next owner starts from the committed offset
            _log.info("not rewinding %s[%d]: %s", *retry.tp, exc)
        topic, partition = retry.tp
        with log_context(topic=topic, partition=partition, offset=retry.offset):
            _log.warning(
                "transient failure (attempt %d), retrying in %.2fs: %r", retry.attempts, delay, retry.cause
            )

    def _on_commit_failure(self, exc: BaseException, first: dict[TP, int]) -> None:
        _log.warning("batch could not be committed (%s); rewinding to the committed offsets", exc)
        self._mode.fail(exc)
        rewind_to_committed(self._require_consumer(), first, self.config.kafka_timeout)
        self._rolled_back()
        self._poll_failures += 1
        self._stop.wait(self.config.retry.delay(self._poll_failures))

    def _rolled_back(self) -> None:
        """Let the service rebuild its state after outputs were taken back; retried (it reads Kafka) until
        it succeeds, because going on with state that counts aborted outputs as sent would lose them."""
        if not self._mode.rolls_back:
            return
        attempt = 0
        while self.on_rollback is not None and not self._stop.is_set():
            try:
                self.on_rollback(self._require_consumer())
                return
            except Exception as exc:
                attempt += 1
                _log.warning("rebuilding state after an abort failed (%r); retrying", exc)
                self._stop.wait(self.config.retry.delay(attempt))

    @property
    def _mode(self) -> CommitMode:
        assert self._mode_ is not None, "run() builds the commit mode"
        return self._mode_

    def _require_consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "run() creates the consumer"
        return self._consumer


def _describe(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
