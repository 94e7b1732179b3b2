"""One transactional producer and everything it takes to keep its transactions exact: the only place in
aoetl that begins, commits or aborts a Kafka transaction. The task loop (``shared.processing``) and the
topic readers (``shared.streaming``: continuous pipelines, topic triggers) both commit through it, so each
protection below holds on every consume path.

* **Fencing.** ``init_transactions`` with our transactional id bumps its epoch, which fences any older
  producer with that id (a zombie from before a rebalance or a restart) and aborts what it left open. A
  fence is not proof of a zombie, though: after a transaction-coordinator failover librdkafka can report
  one (fatal ``_FENCED``) although no other producer has our id (a coordinator that bumped the epoch and
  died before answering; KAFKA-9666, KAFKA-20357). So a fence counts as transient, like a fatal producer:
  the batch is taken back (its offsets were not committed either) and a new producer carries on. Only
  ``FENCE_LIMIT`` fences within ``FENCE_WINDOW_S`` raise ``ProducerFencedError`` (terminal): a real zombie
  keeps being fenced, by its twin's epochs or, having lost its partitions, by the group generation the
  offsets are sent with (KIP-447), so going on never commits a zombie's work.
* **Bounded calls.** librdkafka's ``send_offsets_to_transaction`` can block past its own timeout, forever,
  when the group coordinator it cached went away (a broker restart: librdkafka #5456, #5511). It runs on
  a helper thread; past its timeout plus a grace the producer is abandoned (the call still holds it).
* **Commit retry.** A retriable ``commit_transaction`` error may be retried as is (librdkafka's rule);
  anything else, or the third failure, aborts.
* **Abort or replace.** A failed transaction is aborted; when abort fails, the producer is fatal or fenced,
  a call hung, or commits failed twice in a row, a new producer with the same id is made instead (librdkafka
  lacks KIP-890, so a fresh epoch is the only sure way to end a half-finished transaction; after a
  broker restart a client can keep a coordinator request queued and never sent, which the soak found).
* **Rewind to committed.** After a failure the consumer is sought back to what the group has committed,
  which is right whether the commit landed or not; the caller drops what it derived from the lost input.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared import metrics
from shared.errors import TerminalError, TransientError
from shared.kafka.clients import make_producer
from shared.kafka.types import DeliveryCallback, Headers, KafkaConsumer, TransactionalProducer
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

TP = tuple[str, int]
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH})
# How much longer than its own timeout a transactional call may block before the producer is given up.
HUNG_CALL_GRACE_S = 5.0
# Consecutive failed commits after which the producer is replaced rather than aborted and reused.
REPLACE_AFTER_FAILURES = 2
# Fences within a window after which this instance takes itself for the zombie and stops.
FENCE_LIMIT = 3
FENCE_WINDOW_S = 60.0
_COMMIT_ATTEMPTS = 3
_INIT_MAX_DELAY_S = 10.0


class ProducerFencedError(TerminalError):
    """Fenced again and again (``FENCE_LIMIT`` times within ``FENCE_WINDOW_S``): another live producer owns
    our transactional id, this instance is the zombie and must stop."""


class KafkaCommitError(TransientError):
    """Committing offsets or a transaction did not succeed."""


class TransactionCallHungError(KafkaCommitError):
    """A transactional call did not return long after its own timeout; the producer is abandoned (its call
    still blocks it) and a new one with the same transactional id fences it."""


def transactional_id(*parts: str, suffix: str = "") -> str:
    """A transactional id from its parts (service, instance, pipeline...), in the characters Kafka takes
    everywhere (ids also name metrics and log lines). ``suffix`` is the deployment's topic suffix: two
    deployments sharing a broker may run instances of the same name (``transform-0``), and without it each
    would fence the other's producers. It goes last, so the principals' prefixed grants still cover it."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts) + suffix)


def kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_fence(exc: BaseException) -> bool:
    """Kafka says a newer producer has our transactional id (true, or spurious: see the module docstring)."""
    error = kafka_error(exc)
    return error is not None and error.code() in FENCED_CODES


class FenceCount:
    """The fences of one transactional id in the last ``window_s``: transient until the ``limit``-th, which
    raises ``ProducerFencedError``."""

    def __init__(
        self,
        who: str,
        limit: int = FENCE_LIMIT,
        window_s: float = FENCE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.who, self.limit, self.window_s, self._clock = who, limit, window_s, clock
        self._times: deque[float] = deque()

    def fenced(self, exc: BaseException) -> None:
        now = self._clock()
        self._times.append(now)
        while now - self._times[0] > self.window_s:
            self._times.popleft()
        metrics.PRODUCER_FENCES.inc()
        if len(self._times) >= self.limit:
            raise ProducerFencedError(
                f"transactional id {self.who} fenced {len(self._times)} times within {self.window_s:.0f}s:"
                f" a newer producer has it ({exc})"
            ) from exc
        _log.warning(
            "transactional id %s fenced (%s), %d of %d within %.0fs; replacing the producer",
            self.who,
            exc,
            len(self._times),
            self.limit,
            self.window_s,
        )


class KafkaTransaction:
    """A transactional producer with the protocol of the module docstring. Use from one thread:
    ``open()``, then ``begin()`` / ``produce()`` / ``commit()`` per unit of work, ``fail()`` when a unit
    cannot be committed, ``close()`` at the end."""

    def __init__(
        self,
        kafka: KafkaSettings,
        transactional_id: str,
        *,
        stop: threading.Event,
        timeout: float = 30.0,
        retry_delay: Callable[[int], float] = lambda attempt: min(0.5 * 2 ** (attempt - 1), 10.0),
        producer_overrides: Mapping[str, Any] | None = None,
        fences: FenceCount | None = None,
    ):
        self.kafka, self.transactional_id = kafka, transactional_id
        self._stop, self._timeout, self._retry_delay = stop, timeout, retry_delay
        self._overrides = dict(producer_overrides or {})
        self._producer: TransactionalProducer | None = None
        self._failures = 0  # consecutive failed commits
        self._fences = fences or FenceCount(transactional_id)
        self.ready = False  # initialised: our epoch fences every older producer with this id

    # ------------------------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        self._producer = self._new_producer()

    def close(self) -> None:
        self.ready = False
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None

    def _new_producer(self) -> TransactionalProducer:
        self.ready = False
        producer = self._make_producer()
        attempt = 0
        while True:
            try:
                producer.init_transactions(self._timeout)
                self.ready = True
                return producer
            except KafkaException as exc:
                error = kafka_error(exc)
                if is_fence(exc):
                    self._fences.fenced(exc)  # raises when it recurs
                    producer = self._make_producer()  # a fenced instance stays fenced
                elif error is not None and error.fatal():
                    raise
                attempt += 1
                _log.warning("init_transactions for %s failed (%s); retrying", self.transactional_id, exc)
                if self._stop.wait(self._retry_delay(attempt)):
                    return producer  # stopping: the caller exits before using it

    def _make_producer(self) -> TransactionalProducer:
        producer: TransactionalProducer = make_producer(
            self.kafka, transactional_id=self.transactional_id, **self._overrides
        )
        return producer

    @property
    def producer(self) -> TransactionalProducer:
        assert self._producer is not None, "open() creates the producer"
        return self._producer

    # ------------------------------------------------------------------------------ one transaction
    def begin(self) -> None:
        self.producer.begin_transaction()

    def produce(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None,
        on_delivery: DeliveryCallback | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.producer.produce(topic, value=value, key=key, on_delivery=on_delivery, headers=headers or None)

    def commit(self, offsets: Sequence[TopicPartition], consumer: KafkaConsumer | None) -> None:
        """Add ``offsets`` (next offset per partition, of ``consumer``'s group) and commit; raises on
        failure (then call ``fail``). Fails too if any record of the transaction was not delivered."""
        producer = self.producer
        started = time.monotonic()
        if offsets:
            assert consumer is not None, "offsets belong to a consumer's group"
            metadata = consumer.consumer_group_metadata()
            positions = list(offsets)
            call_bounded(
                "send_offsets_to_transaction",
                lambda: producer.send_offsets_to_transaction(positions, metadata, self._timeout),
                self._timeout + HUNG_CALL_GRACE_S,
            )
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                producer.commit_transaction(self._timeout)
                break
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None or not error.retriable() or error.txn_requires_abort():
                    raise
                if attempt == _COMMIT_ATTEMPTS:
                    raise
                _log.warning("commit_transaction failed retriably (%s); retrying", error)
        self._failures = 0
        metrics.TRANSACTION_COMMIT_SECONDS.observe(time.monotonic() - started)
        metrics.TRANSACTIONS.labels("committed").inc()

    def fail(self, exc: BaseException) -> None:
        """The commit (or a produce into the transaction) failed with ``exc``: abort, or replace the
        producer (see the module docstring). Raises ``ProducerFencedError`` when fences recur: we are the
        zombie."""
        fenced = is_fence(exc)
        if fenced:
            self._fences.fenced(exc)
        self._failures += 1
        error = kafka_error(exc)
        if (
            fenced
            or isinstance(exc, TransactionCallHungError)
            or self._failures >= REPLACE_AFTER_FAILURES
            or (error is not None and error.fatal())
        ):
            # A hung call still holds the old producer, so abort_transaction would only conflict with it;
            # a producer failing again and again may be stuck on a dead connection; a fatal or fenced one
            # accepts nothing more. All: start afresh (the new epoch ends whatever the old one left open).
            metrics.TRANSACTIONS.labels("aborted").inc()
            self._failures = 0
            self._replace()
            return
        self.discard()

    def discard(self) -> None:
        """Take back the open transaction, nothing having gone wrong with Kafka (a handler failed mid-way,
        or there is nothing to commit); a producer that cannot abort is replaced."""
        metrics.TRANSACTIONS.labels("aborted").inc()
        try:
            self.producer.abort_transaction(self._timeout)
        except KafkaException as exc:
            if is_fence(exc):
                self._fences.fenced(exc)
            _log.warning("abort_transaction failed (%s); replacing the producer", exc)
            self._replace()

    def abort_quietly(self) -> None:
        """On the way out after a bug or a shutdown signal: never leave a transaction open behind us."""
        if self._producer is None:
            return
        try:
            self._producer.abort_transaction(self._timeout)
        except Exception as exc:  # the transaction may never have begun; the broker times it out anyway
            _log.debug("abort after error failed: %r", exc)

    def _replace(self) -> None:
        """A new producer with the same transactional id: its ``init_transactions`` bumps the epoch, which
        fences the old producer and aborts whatever transaction it left open."""
        self._producer = self._new_producer()


def rewind_to_committed(consumer: KafkaConsumer, held: Mapping[TP, int], timeout: float) -> None:
    """Seek each partition of ``held`` to the offset its group has committed, or, where nothing is
    committed yet, to ``held``'s offset (the first offset consumed and not committed: the reset position
    that produced it). Right whether the failed commit landed or not."""
    if not held:
        return
    positions = dict(held)
    try:
        for tp in consumer.committed([TopicPartition(t, p) for t, p in held], timeout):
            if tp.error is None and tp.offset >= 0:
                positions[(tp.topic, tp.partition)] = tp.offset
    except KafkaException as exc:
        _log.warning("could not read committed offsets (%s); rewinding to the first uncommitted", exc)
    for (topic, partition), offset in positions.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:  # revoked meanwhile: the next owner starts from the committed offset
            _log.info("not rewinding %s[%d]: %s", topic, partition, exc)


def call_bounded(what: str, call: Callable[[], None], deadline_s: float) -> None:
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
