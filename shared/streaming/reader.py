"""Reading a user topic exactly once: a consumer in a group of its own, and what it produced from the
records committed in ONE Kafka transaction with the group's offsets (KIP-447: the consumer's group
metadata fences zombies). The transaction is ``shared.kafka.transaction.KafkaTransaction``, the same
one the task loop commits through, with every protection it has (bounded calls, commit retry,
abort-or-replace, fencing, rewind to committed).

``WindowedTopicReader`` is the template both topic readers follow, a restarting worker thread: the continuous
pipelines (``services.extract.streams``: a window is a batch) and the topic triggers
(``services.orchestrator.topic_triggers``: a window is one run's events). It decodes each record
(``shared.streaming.decode``), keeps what the subclass accepts in an ``OffsetWindows`` book, and commits
the outputs of closed windows, the dead letters of unreadable records and the offsets together. After a
failed commit the consumer is back at what the group committed and the book is dropped, so it is built
again from there: nothing is committed that was not produced, and nothing produced twice survives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shared.contracts import Stage
from shared.dead_letters import dead_letter_for, dead_letter_key
from shared.errors import TransientError
from shared.kafka.clients import make_consumer
from shared.kafka.messages import KafkaMessage, consume_available, coordinates, headers_of
from shared.kafka.transaction import TP, KafkaTransaction, ProducerFencedError, rewind_to_committed
from shared.kafka.types import Headers, KafkaConsumer, Serde
from shared.settings import KafkaSettings
from shared.spec.models import StreamFormat
from shared.streaming.decode import StreamDecodeError, decode_event
from shared.streaming.windows import OffsetWindows, Window, WindowLimits
from shared.tracing.propagation import carries_trace

_log = logging.getLogger(__name__)

T = TypeVar("T")
# topic, key, value[, headers: the trace context the record carries (shared.tracing)]
Encoded = tuple[str, str | bytes | None, bytes] | tuple[str, str | bytes | None, bytes, Headers]


@dataclass(frozen=True)
class ReaderConfig:
    kafka: KafkaSettings
    group_id: str
    transactional_id: str
    topic: str
    dead_letter_topic: str
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0  # for init/commit/abort/committed calls
    max_poll: int = 500
    poll_ceiling_s: float = 0.5
    idle_commit_s: float = 5.0  # when nothing closes, commit skipped offsets (and report) this often


class TransactionalReader:
    """A consumer in ``group_id`` and a ``KafkaTransaction``; ``commit`` is all-or-nothing.

    Use from one thread: ``open()``, then ``poll``/``commit`` until done, then ``close()``. Rebalance
    callbacks run inside ``poll`` on that thread, so an ``on_revoke`` may drop its book safely."""

    def __init__(
        self,
        config: ReaderConfig,
        *,
        stop: threading.Event,
        on_revoke: Callable[[set[TP]], None] | None = None,
        retry_delay: Callable[[int], float] = lambda attempt: min(0.5 * 2 ** (attempt - 1), 10.0),
    ):
        self.config, self._stop, self._on_revoke, self._retry_delay = config, stop, on_revoke, retry_delay
        self.transaction = KafkaTransaction(
            config.kafka,
            config.transactional_id,
            stop=stop,
            timeout=config.timeout,
            retry_delay=retry_delay,
            producer_overrides=config.producer_overrides,
        )
        self._consumer: KafkaConsumer | None = None
        self._failures = 0
        self.assigned: set[TP] = set()

    def open(self) -> None:
        self.transaction.open()
        self._consumer = make_consumer(
            self.config.kafka, self.config.group_id, **self.config.consumer_overrides
        )
        self._consumer.subscribe(
            [self.config.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leave the group now: the partitions move at once
            except KafkaException as exc:
                _log.warning("closing the consumer of %s failed: %s", self.config.group_id, exc)
            self._consumer = None
        self.transaction.close()

    @property
    def consumer(self) -> KafkaConsumer:
        assert self._consumer is not None, "open() creates the consumer"
        return self._consumer

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        _log.info("%s assigned %s", self.config.group_id, sorted(self.assigned))

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned -= revoked
        if self._on_revoke is not None:
            self._on_revoke(revoked)

    def poll(self, max_messages: int, timeout: float) -> list[KafkaMessage]:
        """Wait up to ``timeout`` for a first record, then take what is already fetched."""
        records = []
        for message in consume_available(self.consumer, max_messages, timeout):
            error = message.error()
            if error is None:
                records.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                _log.warning("%s: kafka error while polling: %s", self.config.group_id, error)
        return records

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        """Low/high offsets as last fetched (no broker round trip), for lag figures."""
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return (low, high) if high >= 0 else None

    def commit(self, outputs: Sequence[Encoded], offsets: Mapping[TP, int], held: Mapping[TP, int]) -> bool:
        """Produce ``outputs`` and commit the group at ``offsets`` (next offset per partition) in one
        transaction. ``held``: the first offset of everything consumed and not committed, per partition.
        On failure the transaction is ended, those partitions are rewound to what the group has committed
        (the caller drops what it holds), and False is returned after a backoff (a fenced producer is replaced
        meanwhile); fences that recur raise ``ProducerFencedError`` (another instance owns this work)."""
        txn = self.transaction
        try:
            txn.begin()
            for output in outputs:
                headers = output[3] if len(output) == 4 else None
                txn.produce(output[0], output[2], output[1], headers=headers)
            txn.commit([TopicPartition(t, p, o) for (t, p), o in offsets.items()], self.consumer)
        except (KafkaException, TransientError) as exc:
            _log.warning("%s: transaction not committed (%s); rewinding", self.config.transactional_id, exc)
            txn.fail(exc)
            rewind_to_committed(self.consumer, held, self.config.timeout)
            self._failures += 1
            self._stop.wait(self._retry_delay(self._failures))
            return False
        except BaseException:
            txn.abort_quietly()
            raise
        self._failures = 0
        return True


class RestartingWorker:
    """A daemon thread running ``_serve`` until ``stop``. A failure is logged, ``_reset`` drops what was
    consumed but not committed, and ``_serve`` starts over after ``restart_delay_s``: the group's committed
    offsets say where to resume, so nothing is lost or produced twice.

    A terminal fence (``ProducerFencedError``: ``FENCE_LIMIT`` fences within ``FENCE_WINDOW_S``) restarts
    the worker too, with a fresh fence count (``WindowedTopicReader._serve`` makes a new reader, so a new
    ``KafkaTransaction`` and ``FenceCount``). Dying instead would leave the pipeline or the trigger unread
    until the supervisor's next look, and spurious fences (a coordinator failover, see
    ``shared.kafka.transaction``) would kill healthy workers. A real twin with our transactional id is
    no danger to exactness (KIP-447: offsets carry the group generation), only to throughput: the two
    fence each other at every restart, so restarts after fences with no commit in between back off,
    doubling up to ``fenced_restart_max_s``."""

    restart_delay_s = 1.0
    fenced_restart_max_s = 30.0

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.restarts = 0  # how often ``_serve`` failed and started over (for tests and logs)
        self._fenced_in_a_row = 0  # terminal fences with no commit between them

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

    def _progressed(self) -> None:
        """A commit succeeded: the next terminal fence restarts without backoff."""
        self._fenced_in_a_row = 0

    def _run(self) -> None:
        name = self._thread.name
        while not self._stop.is_set():
            delay = self.restart_delay_s
            try:
                self._serve()
            except ProducerFencedError as exc:
                self._fenced_in_a_row += 1
                delay = min(delay * 2 ** (self._fenced_in_a_row - 1), self.fenced_restart_max_s)
                _log.warning("%s fenced (%s); restarting in %.0fs, fence count fresh", name, exc, delay)
                self.restarts += 1
            except Exception:
                _log.exception("%s failed; starting over", name)
                self.restarts += 1
            self._reset()
            self._stop.wait(delay)


class WindowedTopicReader(RestartingWorker, Generic[T]):
    """Reads one topic (the partitions its group gives this instance) into windows and commits what the
    subclass makes of the closed ones. Subclasses say what to keep of an event (``keep``), what to produce
    from closed windows (``outputs``) and when idle (``idle_outputs``)."""

    # Close open windows on a graceful stop (hand over exactly what was read) rather than leave them to be
    # formed again by the next owner.
    close_on_stop = False
    dead_letter_stage = Stage.EXTRACT
    # Keep the trace headers of each window's first traced event (``Window.trace``): a topic trigger's run
    # continues the trace of the event that started it.
    continues_trace = False

    def __init__(
        self, name: str, config: ReaderConfig, limits: WindowLimits, fmt: StreamFormat, serde: Serde
    ):
        super().__init__(name)
        self.reader_config, self.format, self.serde = config, fmt, serde
        self.windows: OffsetWindows[T] = OffsetWindows(limits)
        self._dead_letters: list[tuple[TP, Encoded]] = []

    # ---------------------------------------------------------------------------------------- hooks
    def keep(self, event: dict[str, Any]) -> T | None:
        """What of a decoded event joins a window (None: skip it; its offset is still committed)."""
        raise NotImplementedError

    def outputs(self, closed: list[Window[T]], reader: TransactionalReader) -> list[Encoded]:
        raise NotImplementedError

    def idle_outputs(self, reader: TransactionalReader) -> list[Encoded]:
        """What to commit when nothing closed for ``idle_commit_s`` (e.g. a heartbeat)."""
        return []

    @property
    def run_id(self) -> str | None:
        """The run the dead letters belong to, if the reader serves one."""
        return None

    @property
    def tenant(self) -> str | None:
        """The tenant the dead letters belong to, if the reader knows it (else their run's decides)."""
        return None

    def committed(self, closed: list[Window[T]], dead_letters: int) -> None:
        """After a successful commit (metrics, logs)."""

    # ------------------------------------------------------------------------------------- the loop
    def _reset(self) -> None:
        self.windows.forget()
        self._dead_letters = []

    def _serve(self) -> None:
        config = self.reader_config
        reader = TransactionalReader(config, stop=self._stop, on_revoke=self._forget)
        reader.open()
        _log.info("%s reads %s", self._thread.name, config.topic)
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                wait = self.windows.wait(time.monotonic(), config.poll_ceiling_s)
                self._take_all(reader.poll(config.max_poll, wait))
                now = time.monotonic()
                self.windows.close_due(now)
                if self.windows.closed or self._dead_letters:
                    self._commit(reader)
                    last_commit = now
                elif now - last_commit >= config.idle_commit_s:
                    self._commit(reader, idle=True)
                    last_commit = now
            if self.close_on_stop:
                self.windows.close_all()
            if self.windows.uncommitted() or self._dead_letters:
                self._commit(reader)
        finally:
            reader.close()
            _log.info("%s left %s", self._thread.name, config.topic)

    def _forget(self, tps: set[TP]) -> None:
        self.windows.forget(tps)
        self._dead_letters = [(tp, letter) for tp, letter in self._dead_letters if tp not in tps]

    def _take_all(self, messages: Sequence[KafkaMessage]) -> None:
        """One poll's records into the book (``shared.streaming.undecoded`` overrides this)."""
        for message in messages:
            self._take(message)

    def _take(self, message: KafkaMessage) -> None:
        topic, partition, offset = coordinates(message)
        raw = message.value()
        try:
            item = self.keep(decode_event(raw, self.format, self.serde))
        except StreamDecodeError as exc:
            self._dead_letters.append(((topic, partition), self._dead_letter(message, exc)))
            item = None
        trace = None
        if self.continues_trace and item is not None:
            headers = headers_of(message)
            trace = headers if carries_trace(headers) else None
        self.windows.add((topic, partition), offset, item, len(raw or b""), time.monotonic(), trace)

    def _commit(self, reader: TransactionalReader, *, idle: bool = False) -> None:
        self._forget({tp for tp in self.windows.partitions() if tp not in reader.assigned})
        closed = list(self.windows.closed)
        outputs = self.outputs(closed, reader) if closed else []
        if idle and not outputs:
            outputs = self.idle_outputs(reader)
        letters = [letter for _, letter in self._dead_letters]
        if not outputs and not letters and not self.windows.uncommitted():
            return
        offsets = self.windows.offsets()
        if reader.commit(outputs + letters, offsets, self.windows.held()):
            self._progressed()
            self.committed(closed, len(letters))
            self.windows.committed(offsets)
        else:
            self.windows.forget()
        self._dead_letters = []

    def _dead_letter(self, message: KafkaMessage, exc: Exception) -> Encoded:
        run_id = self.run_id
        letter = dead_letter_for(message, self.dead_letter_stage, exc, run_id=run_id, tenant=self.tenant)
        return (
            self.reader_config.dead_letter_topic,
            dead_letter_key(message, run_id),
            self.serde.encode(letter),
        )
