"""A compacted topic as an in-memory mapping: the last value per key, a tombstone deletes.

A background thread reads the whole topic at ``start`` (which returns once it is caught up, so the first
decision already sees every key) and then follows it. ``version`` grows on every change, so a supervisor
can notice changes by polling it cheaply. Every replica holds the whole topic: such topics are small
(definitions, watermarks, the desired state of continuous pipelines). ``catch_up`` gives
read-your-writes: it waits until everything written before the call is applied. Both of its consumers
(the follower and the ``catch_up`` probe) come from ``KafkaClients``, with the service's security settings.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from shared.contracts import Contract
from shared.kafka.clients import KafkaClients
from shared.kafka.types import Serde
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=Contract)


class CompactedView(Generic[C]):
    def __init__(
        self, kafka: KafkaSettings, topic: str, model: type[C], serde: Serde, *, timeout: float = 30.0
    ):
        self._clients = KafkaClients(kafka)
        self._topic, self._model, self._serde, self._timeout = topic, model, serde, timeout
        self._values: dict[str, C] = {}
        self._positions: dict[int, int] = {}  # next offset to apply, per partition
        self._probe: Consumer | None = None  # used only from the caller's thread, by catch_up
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self.version = 0

    def get(self, key: str) -> C | None:
        with self._lock:
            return self._values.get(key)

    def snapshot(self) -> dict[str, C]:
        with self._lock:
            return dict(self._values)

    def is_caught_up(self) -> bool:
        return self._caught_up.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name=f"view-{self._topic}", daemon=True)
        self._thread.start()
        if not self._caught_up.wait(self._timeout):
            _log.warning("%s not read to its end within %.0fs", self._topic, self._timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._probe is not None:
            self._probe.close()

    def catch_up(self, timeout: float = 5.0) -> bool:
        """Wait until everything written to the topic before this call is applied (a watermark committed
        with the previous run's result must be seen by the next run of the pipeline)."""
        if self._probe is None:
            self._probe = self._clients.consumer(f"aoetl-probe-{uuid.uuid4().hex}")
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
            time.sleep(0.01)  # the follower thread applies within one poll; nothing to block on here
        _log.warning("view of %s did not catch up within %.1fs", self._topic, timeout)
        return False

    def _advance(self, partition: int, position: int) -> None:
        with self._lock:
            self._positions[partition] = max(position, self._positions.get(partition, 0))

    def _follow(self) -> None:
        consumer = self._clients.consumer(f"aoetl-view-{uuid.uuid4().hex}", partition_eof=True)
        try:
            meta = consumer.list_topics(self._topic, timeout=self._timeout).topics[self._topic]
            parts = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            consumer.assign(parts)
            pending = {p.partition for p in parts}
            if not pending:
                self._caught_up.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
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
            _log.exception("view of %s stopped", self._topic)
            self._caught_up.set()
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode("utf-8", "replace")
        if value is None:
            with self._lock:
                self._values.pop(name, None)
                self.version += 1
            return
        try:
            decoded = self._serde.decode(value, self._model)
        except Exception as exc:  # one unreadable record must not hide the others
            _log.warning("skipping unreadable %s record %r: %s", self._topic, name, exc)
            return
        with self._lock:
            self._values[name] = decoded
            self.version += 1
