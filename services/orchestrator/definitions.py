"""A compacted topic as an in-memory table: the registered pipeline definitions, the watermarks of
incremental pipelines.

A background thread reads the whole topic at start (``start`` returns once caught up, so requests that
name a definition can be resolved from the first message on) and then follows it. A tombstone (null
value) deletes an entry. Every orchestrator replica holds all of it: entries are few and small.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from shared.contracts import Contract, PipelineDefinition
from shared.kafka.clients import make_consumer
from shared.kafka.types import Serde
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=Contract)


class CompactedView(Generic[C]):
    def __init__(
        self, kafka: KafkaSettings, topic: str, serde: Serde, model: type[C], *, timeout: float = 30.0
    ):
        self._kafka, self._topic, self._serde, self._timeout = kafka, topic, serde, timeout
        self._model = model
        self._definitions: dict[str, C] = {}
        self._positions: dict[int, int] = {}  # next offset to apply, per partition
        self._probe: Consumer | None = None  # only used from the caller's thread, by catch_up
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> C | None:
        with self._lock:
            return self._definitions.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._definitions)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="definitions", daemon=True)
        self._thread.start()
        if not self._caught_up.wait(self._timeout):
            _log.warning("definitions topic %s not read to its end within %.0fs", self._topic, self._timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._probe is not None:
            self._probe.close()

    def _follow(self) -> None:
        consumer = make_consumer(self._kafka, f"aoetl-definitions-{uuid.uuid4().hex}", partition_eof=True)
        try:
            meta = consumer.list_topics(self._topic, timeout=self._timeout).topics[self._topic]
            parts = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            consumer.assign(parts)
            pending = {p.partition for p in parts}
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                part = msg.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._advance(part, msg.offset() or 0)
                        pending.discard(part)
                        if not pending:
                            self._caught_up.set()
                    continue
                self._apply(msg.key(), msg.value())
                self._advance(part, (msg.offset() or 0) + 1)
        except Exception:
            _log.exception("definitions view stopped")
            self._caught_up.set()
        finally:
            consumer.close()

    def _advance(self, partition: int, position: int) -> None:
        with self._lock:
            self._positions[partition] = max(position, self._positions.get(partition, 0))

    def catch_up(self, timeout: float = 5.0) -> bool:
        """Wait until everything written to the topic before this call is applied (read-your-writes:
        a watermark committed with the previous run's result must be seen by the next run)."""
        if self._probe is None:
            self._probe = make_consumer(self._kafka, f"aoetl-probe-{uuid.uuid4().hex}")
        meta = self._probe.list_topics(self._topic, timeout=timeout).topics[self._topic]
        ends = {
            p: self._probe.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=timeout, cached=False
            )[1]
            for p in meta.partitions
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self._positions.get(p, 0) >= end for p, end in ends.items() if end > 0):
                    return True
            time.sleep(0.01)  # the follower thread applies within a poll; nothing to block on here
        _log.warning("%s view did not catch up within %.1fs", self._topic, timeout)
        return False

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode("utf-8", "replace")
        if value is None:
            with self._lock:
                self._definitions.pop(name, None)
            return
        try:
            entry = self._serde.decode(value, self._model)
        except Exception as exc:  # one unreadable entry must not hide the others
            _log.warning("skipping unreadable %s %r: %s", self._model.__name__, name, exc)
            return
        with self._lock:
            self._definitions[name] = entry


class DefinitionsView(CompactedView[PipelineDefinition]):
    def __init__(self, kafka: KafkaSettings, topic: str, serde: Serde, *, timeout: float = 30.0):
        super().__init__(kafka, topic, serde, PipelineDefinition, timeout=timeout)
