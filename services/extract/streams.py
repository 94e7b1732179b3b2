"""Continuous pipelines: the extract side of a ``kafka`` source.

A continuous run never becomes an ``ExtractTask`` (a task must end to commit). Instead the orchestrator
publishes the run's desired state, a ``StreamRun`` keyed by pipeline name, to the compacted streams topic,
and every extract instance follows that topic (``StreamSupervisor``) and runs one ``StreamWorker`` per
RUNNING pipeline. All workers of a pipeline share the consumer group ``aoetl-stream.<pipeline>``, so Kafka
spreads the source partitions over the extract instances, moves them when one dies, and keeps the offsets
across runs: a stopped pipeline started again resumes where it left off.

Exactly once from the source topic to the destination: a worker fills one buffer per source partition and
flushes every ``stream_linger_ms`` (or at ``run.batch_rows`` rows): one ``DataBatch`` per partition, its
STREAM_PROGRESS event and the dead letters of unreadable events, all in ONE Kafka transaction with the
group's offsets. Batch ids are deterministic, ``<pipeline>:<topic>:<partition>:<first>-<last>`` offsets,
so the sinks' ledgers turn any redelivery downstream into a no-op. A source partition's batches keep one
key, so they stay in order through transform and load (merge destinations need that).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from confluent_kafka import Message
from prometheus_client import Counter, Gauge

from shared.batch import encode_table
from shared.connectors.errors import SourceReadError
from shared.connectors.records import records_to_tables
from shared.contracts import (
    DataBatch,
    DeadLetter,
    ErrorInfo,
    EventKind,
    Origin,
    RunEvent,
    Stage,
    StreamRun,
    StreamState,
)
from shared.kafka.compacted import CompactedView
from shared.kafka.topics import Topics
from shared.kafka.types import Serde
from shared.settings import KafkaSettings
from shared.spec.models import KafkaSource
from shared.streaming import (
    TP,
    Encoded,
    GroupTransactor,
    RestartingWorker,
    StreamDecodeError,
    coordinates,
    decode_event,
)

_log = logging.getLogger(__name__)

STREAM_RECORDS = Counter(
    "aoetl_stream_records", "Source events read by continuous pipelines (committed)", ["pipeline"]
)
STREAM_BATCHES = Counter("aoetl_stream_batches", "Batches continuous pipelines produced", ["pipeline"])
STREAM_DEAD_LETTERS = Counter(
    "aoetl_stream_dead_letters", "Unreadable source events dead-lettered", ["pipeline"]
)
STREAM_LAG = Gauge(
    "aoetl_stream_lag_records", "Source events not yet read, per partition", ["pipeline", "partition"]
)


def stream_group(pipeline: str, suffix: str) -> str:
    return f"aoetl-stream.{pipeline}{suffix}"


def batch_id_for(pipeline: str, topic: str, partition: int, first: int, last: int) -> str:
    return f"{pipeline}:{topic}:{partition}:{first}-{last}"


# ------------------------------------------------------------------------------------------ buffers
@dataclass
class PartitionBuffer:
    base: int  # first offset consumed and not committed
    position: int  # next offset to consume
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_at: float | None = None  # when the oldest buffered row arrived (monotonic)

    @property
    def pending(self) -> bool:
        return self.position > self.base


class StreamBuffers:
    """What a worker consumed and has not committed, per source partition. No I/O, clock passed in."""

    def __init__(self, batch_rows: int, linger_s: float):
        self.batch_rows, self.linger_s = batch_rows, linger_s
        self.parts: dict[TP, PartitionBuffer] = {}

    def add(self, tp: TP, offset: int, row: dict[str, Any] | None, now: float) -> None:
        buffer = self.parts.setdefault(tp, PartitionBuffer(base=offset, position=offset))
        buffer.position = offset + 1
        if row is not None:
            buffer.rows.append(row)
            if buffer.first_at is None:
                buffer.first_at = now

    def due(self, now: float) -> bool:
        for buffer in self.parts.values():
            if len(buffer.rows) >= self.batch_rows:
                return True
            if buffer.first_at is not None and now - buffer.first_at >= self.linger_s:
                return True
        return False

    def wait(self, now: float, ceiling: float) -> float:
        """How long a poll may wait before the oldest buffered row is due."""
        oldest = [b.first_at for b in self.parts.values() if b.first_at is not None]
        if not oldest:
            return ceiling
        return max(0.0, min(ceiling, min(oldest) + self.linger_s - now))

    def pending(self) -> bool:
        return any(b.pending for b in self.parts.values())

    def offsets(self) -> dict[TP, int]:
        return {tp: b.position for tp, b in self.parts.items() if b.pending}

    def held(self) -> dict[TP, int]:
        return {tp: b.base for tp, b in self.parts.items()}

    def committed(self) -> None:
        for buffer in self.parts.values():
            buffer.base = buffer.position
            buffer.rows = []
            buffer.first_at = None

    def forget(self, tps: set[TP] | None = None) -> None:
        if tps is None:
            self.parts.clear()
        else:
            for tp in tps:
                self.parts.pop(tp, None)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """One Arrow table per batch. JSON has no schema: when the events disagree on a field's type, that
    batch carries every value as text (the spec's cast steps type it), rather than losing events."""
    try:
        (table,) = records_to_tables(rows, len(rows), where="stream batch")
        return table
    except SourceReadError:
        texts = [{k: None if v is None else _text(v) for k, v in row.items()} for row in rows]
        (table,) = records_to_tables(texts, len(texts), where="stream batch")
        return table


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


# ------------------------------------------------------------------------------------------- worker
@dataclass(frozen=True)
class StreamConfig:
    kafka: KafkaSettings
    instance_id: str
    topic_suffix: str
    linger_s: float
    heartbeat_s: float
    session_timeout_ms: int
    transaction_timeout_ms: int

    def topic(self, name: str) -> str:
        return f"{name}{self.topic_suffix}"


class StreamWorker(RestartingWorker):
    """Reads one continuous run's source topic (the partitions Kafka gives this instance)."""

    def __init__(self, stream: StreamRun, config: StreamConfig, serde: Serde):
        assert isinstance(stream.spec.source, KafkaSource), "only kafka sources are continuous"
        super().__init__(f"stream-{stream.pipeline}")
        self.stream, self.config, self.serde = stream, config, serde
        self.source: KafkaSource = stream.spec.source
        self.buffers = StreamBuffers(stream.spec.run.batch_rows, config.linger_s)
        self._dead_letters: list[Encoded] = []

    @property
    def run_id(self) -> str:
        return self.stream.run_id

    def _reset(self) -> None:
        self.buffers.forget()
        self._dead_letters = []

    def _serve(self) -> None:
        c, pipeline = self.config, self.stream.pipeline
        transactor = GroupTransactor(
            c.kafka,
            group_id=stream_group(pipeline, c.topic_suffix),
            transactional_id=re.sub(r"[^A-Za-z0-9._-]", "_", f"extract-stream-{c.instance_id}-{pipeline}"),
            topics=[self.source.topic],
            stop=self._stop,
            consumer_overrides={"session.timeout.ms": c.session_timeout_ms},
            producer_overrides={"transaction.timeout.ms": c.transaction_timeout_ms},
            on_revoke=lambda parts: self.buffers.forget({(p.topic, p.partition) for p in parts}),
        )
        transactor.open()
        _log.info("continuous run %s reads %s", self.run_id, self.source.topic)
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for message in transactor.poll(self.buffers.batch_rows, self.buffers.wait(now, 0.5)):
                    self._take(message)
                now = time.monotonic()
                if self.buffers.due(now) or self._dead_letters:
                    self._flush(transactor)
                    last_report = now
                elif now - last_report >= c.heartbeat_s:
                    # Alive but idle: progress for whoever watches for stuck runs; commits what was skipped.
                    self._flush(transactor, heartbeat=True)
                    last_report = now
            if self.buffers.pending() or self._dead_letters:
                self._flush(transactor)  # a graceful stop hands over exactly what it read
        finally:
            transactor.close()
            _log.info("continuous run %s left %s", self.run_id, self.source.topic)

    def _take(self, message: Message) -> None:
        topic, partition, offset = coordinates(message)
        try:
            row = decode_event(message.value(), self.source.format, self.serde)
        except StreamDecodeError as exc:
            self._dead_letters.append(self._dead_letter(message, exc))
            row = None
        self.buffers.add((topic, partition), offset, row, time.monotonic())

    def _flush(self, transactor: GroupTransactor, *, heartbeat: bool = False) -> None:
        pipeline = self.stream.pipeline
        outputs: list[Encoded] = []
        rows = batches = 0
        assigned = transactor.assigned
        for tp in [tp for tp in self.buffers.parts if tp not in assigned]:
            self.buffers.forget({tp})  # revoked meanwhile: its new owner reads it again
        for (topic, partition), buffer in self.buffers.parts.items():
            if not buffer.pending:
                continue
            lag = _lag(transactor.watermarks(topic, partition), buffer.position)
            if lag is not None:
                STREAM_LAG.labels(pipeline, str(partition)).set(lag)
            if buffer.rows:
                outputs.extend(self._batch(topic, partition, buffer, lag))
                rows += len(buffer.rows)
                batches += 1
        if heartbeat and not outputs:
            outputs.append(self._progress(None, 0, {"heartbeat": "true"}))
        outputs.extend(self._dead_letters)
        offsets = self.buffers.offsets()
        if transactor.commit(outputs, offsets, self.buffers.held()):
            STREAM_RECORDS.labels(pipeline).inc(rows)
            STREAM_BATCHES.labels(pipeline).inc(batches)
            STREAM_DEAD_LETTERS.labels(pipeline).inc(len(self._dead_letters))
            self.buffers.committed()
        else:
            self.buffers.forget()
        self._dead_letters = []

    def _batch(
        self, topic: str, partition: int, buffer: PartitionBuffer, lag: int | None
    ) -> Sequence[Encoded]:
        spec, pipeline = self.stream.spec, self.stream.pipeline
        first, last = buffer.base, buffer.position - 1
        batch_id = batch_id_for(pipeline, topic, partition, first, last)
        table = rows_to_table(buffer.rows)
        batch = DataBatch(
            run_id=self.run_id,
            task_id=f"{self.run_id}:p{partition}",
            batch_id=batch_id,
            seq=first,
            stage=Stage.EXTRACT,
            row_count=table.num_rows,
            payload=encode_table(table),
            spec=spec,
        )
        details = {
            "topic": topic,
            "partition": str(partition),
            "first_offset": str(first),
            "last_offset": str(last),
        }
        if lag is not None:
            details["lag"] = str(lag)
        # One key per source partition: its batches share a partition downstream and stay in order.
        key = f"{pipeline}:{topic}:{partition}"
        return [
            (self.config.topic(Topics.DATA_EXTRACTED), key, self.serde.encode(batch)),
            self._progress(batch_id, table.num_rows, details, task_id=batch.task_id),
        ]

    def _progress(
        self, batch_id: str | None, rows: int, details: dict[str, str], task_id: str | None = None
    ) -> Encoded:
        event = RunEvent(
            run_id=self.run_id,
            kind=EventKind.STREAM_PROGRESS,
            stage=Stage.EXTRACT,
            task_id=task_id,
            batch_id=batch_id,
            rows_out=rows,
            batches=1 if batch_id else 0,
            details=details,
            instance=self.config.instance_id,
        )
        return (self.config.topic(Topics.EVENTS), self.run_id, self.serde.encode(event))

    def _dead_letter(self, message: Message, exc: Exception) -> Encoded:
        topic, partition, offset = coordinates(message)
        letter = DeadLetter(
            origin=Origin(topic=topic, partition=partition, offset=offset, key=message.key()),
            stage=Stage.EXTRACT,
            error=ErrorInfo.from_exception(exc),
            run_id=self.run_id,
            payload=message.value() or b"",
        )
        return (self.config.topic(Topics.DEAD_LETTERS), self.run_id, self.serde.encode(letter))


def _lag(watermarks: tuple[int, int] | None, position: int) -> int | None:
    return None if watermarks is None else max(0, watermarks[1] - position)


# --------------------------------------------------------------------------------------- supervisor
class StreamSupervisor:
    """Follows the streams topic and keeps exactly one worker per RUNNING pipeline on this instance."""

    def __init__(
        self, view: CompactedView[StreamRun], config: StreamConfig, serde: Serde, *, refresh_s: float = 0.2
    ):
        self.view, self.config, self.serde, self._refresh_s = view, config, serde, refresh_s
        self.workers: dict[str, StreamWorker] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="streams", daemon=True)
        self._seen = -1

    def start(self) -> None:
        self.view.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.view.stop()

    def _supervise(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._reconcile()
                except Exception:
                    _log.exception("continuous runs could not be reconciled")
                self._stop.wait(self._refresh_s)
        finally:
            self._stop_workers(list(self.workers))

    def _reconcile(self) -> None:
        version = self.view.version
        dead = [name for name, w in self.workers.items() if not w.is_alive()]
        if version == self._seen and not dead:
            return
        self._seen = version
        desired = {
            name: run
            for name, run in self.view.snapshot().items()
            if run.state is StreamState.RUNNING and isinstance(run.spec.source, KafkaSource)
        }
        stale = [
            name
            for name, w in self.workers.items()
            if name not in desired or desired[name].run_id != w.run_id
        ]
        self._stop_workers(stale + [d for d in dead if d not in stale])
        for name, run in desired.items():
            if name not in self.workers:
                worker = StreamWorker(run, self.config, self.serde)
                worker.start()
                self.workers[name] = worker

    def _stop_workers(self, names: list[str]) -> None:
        for name in names:
            self.workers[name].stop()
        for name in names:
            # The worker commits what it read before it leaves the group, so its successor starts there.
            self.workers.pop(name).join(60)
