"""The registered pipeline definitions, as the compacted definitions topic says they are.

A background thread reads the whole topic at start (``start`` returns once caught up, so requests that
name a definition can be resolved from the first message on) and then follows it. A tombstone (null
value) deletes a definition. Every orchestrator replica holds all definitions: they are few and small.
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from shared.contracts import PipelineDefinition
from shared.kafka.clients import make_consumer
from shared.kafka.types import Serde
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)


class DefinitionsView:
    def __init__(self, kafka: KafkaSettings, topic: str, serde: Serde, *, timeout: float = 30.0):
        self._kafka, self._topic, self._serde, self._timeout = kafka, topic, serde, timeout
        self._definitions: dict[str, PipelineDefinition] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> PipelineDefinition | None:
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
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        if not pending:
                            self._caught_up.set()
                    continue
                self._apply(msg.key(), msg.value())
        except Exception:
            _log.exception("definitions view stopped")
            self._caught_up.set()
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode("utf-8", "replace")
        if value is None:
            with self._lock:
                self._definitions.pop(name, None)
            return
        try:
            definition = self._serde.decode(value, PipelineDefinition)
        except Exception as exc:  # one unreadable definition must not hide the others
            _log.warning("skipping unreadable definition %r: %s", name, exc)
            return
        with self._lock:
            self._definitions[definition.name] = definition
