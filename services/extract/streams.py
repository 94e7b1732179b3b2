"""Continuous pipelines: the extract side of a ``kafka`` source.

A continuous run never becomes an ``ExtractTask`` (a task must end to commit). Instead the orchestrator
publishes the run's desired state, a ``StreamRun`` keyed by pipeline name, to the compacted streams topic,
and every extract instance follows that topic (``stream_supervisor``) and runs one ``StreamWorker`` per
RUNNING pipeline. All workers of a pipeline share the consumer group ``aoetl-stream.<pipeline>``, so Kafka
spreads the source partitions over the extract instances, moves them when one dies, and keeps the offsets
across runs: a stopped pipeline started again resumes where it left off.

Exactly once from the source topic to the destination: a worker is a ``shared.streaming.WindowedTopicReader``
whose window per source partition is a batch, closed ``stream_linger_ms`` after its first row or at
``run.batch_rows`` rows: one ``DataBatch`` per closed window, its STREAM_PROGRESS event and the dead letters
of unreadable events, all in ONE Kafka transaction with the group's offsets (the transaction engine of
every consume path, ``shared.kafka.transaction``). Batch ids are deterministic, the
``<pipeline>:<topic>:<partition>:<first>-<last>`` offsets of the batch's first and last rows,
so the sinks' ledgers turn any redelivery downstream into a no-op. A source partition's batches keep one
key, so they stay in order through transform and load (merge destinations need that).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from services.extract import metrics
from services.extract.handoff import Handoff, ReadBatch, ToTransform
from shared import streaming
from shared.allocation import gc_paused
from shared.connectors.errors import SourceReadError
from shared.connectors.records import records_to_tables
from shared.contracts import EventKind, Origin, RunEvent, Stage, StreamProgress, StreamRun, StreamState
from shared.kafka.compacted import CompactedView
from shared.kafka.messages import KafkaMessage
from shared.kafka.topics import Topics
from shared.kafka.transaction import transactional_id
from shared.kafka.types import Serde
from shared.policy.names import topic_problem
from shared.policy.settings import load_policy
from shared.settings import KafkaSettings
from shared.spec.models import KafkaSource
from shared.tracing import spans as tracing


def stream_group(pipeline: str, suffix: str) -> str:
    return f"aoetl-stream.{pipeline}{suffix}"


def batch_id_for(pipeline: str, topic: str, partition: int, first: int, last: int) -> str:
    return f"{pipeline}:{topic}:{partition}:{first}-{last}"


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
    kafka_timeout_s: float = 30.0  # bound on init/commit/abort calls, as in the task loop
    # a new handoff for each worker: a chained transform's engines are its thread's own
    handoff: Callable[[], Handoff] | None = None

    def topic(self, name: str) -> str:
        return f"{name}{self.topic_suffix}"


class StreamWorker(streaming.UndecodedWindowReader):
    """Reads one continuous run's source topic (the partitions Kafka gives this instance): a window is a
    batch, closed at ``run.batch_rows`` records or ``stream_linger_ms`` after its first record, and
    decoded when it closes (``shared.streaming.undecoded``: the per-record Python was most of a drain's
    CPU)."""

    close_on_stop = True  # a graceful stop hands over exactly what it read
    dead_letter_stage = Stage.EXTRACT

    def __init__(self, stream: StreamRun, config: StreamConfig, serde: Serde):
        assert isinstance(stream.spec.source, KafkaSource), "only kafka sources are continuous"
        self.stream, self.config = stream, config
        self.source: KafkaSource = stream.spec.source
        pipeline, batch_rows = stream.pipeline, stream.spec.run.batch_rows
        reader = streaming.ReaderConfig(
            kafka=config.kafka,
            group_id=stream_group(pipeline, config.topic_suffix),
            transactional_id=transactional_id(
                "extract-stream", config.instance_id, pipeline, suffix=config.topic_suffix
            ),
            topic=self.source.topic,
            dead_letter_topic=config.topic(Topics.DEAD_LETTERS),
            consumer_overrides={"session.timeout.ms": config.session_timeout_ms},
            producer_overrides={"transaction.timeout.ms": config.transaction_timeout_ms},
            timeout=config.kafka_timeout_s,
            max_poll=batch_rows,
            idle_commit_s=config.heartbeat_s,
        )
        limits = streaming.WindowLimits(items=batch_rows, max_age_s=config.linger_s)
        super().__init__(f"stream-{pipeline}", reader, limits, self.source.format, serde)
        self.handoff = config.handoff() if config.handoff else ToTransform(config.topic)

    def _serve(self) -> None:
        try:
            super()._serve()
        finally:
            self.handoff.close()  # its engines are rebuilt if the worker starts over

    @property
    def run_id(self) -> str:
        return self.stream.run_id

    def outputs(
        self, closed: list[streaming.Window[KafkaMessage]], reader: streaming.TransactionalReader
    ) -> list[streaming.Encoded]:
        outputs: list[streaming.Encoded] = []
        for window in closed:
            topic, partition = window.tp
            lag = _lag(reader.watermarks(topic, partition), window.last_offset + 1)
            if lag is not None:
                metrics.stream_lag(self.stream.pipeline, partition, lag)
            outputs.extend(self._batch(window, lag))
        return outputs

    def idle_outputs(self, reader: streaming.TransactionalReader) -> list[streaming.Encoded]:
        # Alive but idle: progress for whoever watches for stuck runs; commits what was skipped.
        return [self._progress(None, 0, StreamProgress(heartbeat=True))]

    def committed(self, closed: list[streaming.Window[KafkaMessage]], dead_letters: int) -> None:
        metrics.stream_committed(self.stream.pipeline, sum(len(w.items) for w in closed), len(closed))

    def _batch(self, window: streaming.Window[KafkaMessage], lag: int | None) -> Sequence[streaming.Encoded]:
        # a dict per event, none of them in a cycle, all freed once the table holds their values: the
        # collector would only traverse them (shared.allocation)
        with gc_paused():
            events, dead_letters = self.decoded(window)
            table = rows_to_table(events) if events else None
            del events
        if table is None:
            return dead_letters
        spec, pipeline = self.stream.spec, self.stream.pipeline
        (topic, partition), first, last = window.tp, window.first_offset, window.last_offset
        batch_id = batch_id_for(pipeline, topic, partition, first, last)
        task_id = f"{self.run_id}:p{partition}"
        progress = StreamProgress(
            topic=topic, partition=partition, first_offset=first, last_offset=last, lag=lag
        )
        # each batch of a continuous run is a trace of its own (a run that never ends is no one trace),
        # which transform and load continue
        attributes = {
            **tracing.describe(self.stream),
            "aoetl.task_id": task_id,
            "aoetl.batch_id": batch_id,
            "aoetl.batch.rows": table.num_rows,
            "aoetl.stage": Stage.EXTRACT.value,
        }
        with tracing.child("extract stream batch", attributes):
            headers = tracing.current_headers()
        # One key per source partition: its batches share a partition downstream and stay in order.
        key = f"{pipeline}:{topic}:{partition}"
        origin = Origin(topic=topic, partition=partition, offset=first, key=None)
        read = ReadBatch(self.run_id, task_id, batch_id, first, spec, table, key, origin, headers)
        handed = [
            (out.topic, out.key, self.serde.encode(out.value), out.headers)
            for out in self.handoff.hand_off(read)
        ]
        return [
            *handed,
            (*self._progress(batch_id, table.num_rows, progress, task_id=task_id), headers),
            *dead_letters,
        ]

    def _progress(
        self, batch_id: str | None, rows: int, progress: StreamProgress, task_id: str | None = None
    ) -> streaming.Encoded:
        event = RunEvent(
            run_id=self.run_id,
            kind=EventKind.STREAM_PROGRESS,
            stage=Stage.EXTRACT,
            task_id=task_id,
            batch_id=batch_id,
            rows_out=rows,
            batches=1 if batch_id else 0,
            payload=progress,
            instance=self.config.instance_id,
        )
        return (self.config.topic(Topics.EVENTS), self.run_id, self.serde.encode(event))


def _lag(watermarks: tuple[int, int] | None, position: int) -> int | None:
    return None if watermarks is None else max(0, watermarks[1] - position)


# --------------------------------------------------------------------------------------- supervisor
def running_streams(view: CompactedView[StreamRun]) -> dict[str, StreamRun]:
    """The continuous runs the streams topic says are RUNNING, by pipeline name. A source topic the spec
    policy calls internal is never read (the orchestrator rejects such a spec; this holds even if not)."""
    prefixes = load_policy().internal_topic_prefixes
    return {
        name: run
        for name, run in view.snapshot().items()
        if run.state is StreamState.RUNNING
        and isinstance(run.spec.source, KafkaSource)
        and topic_problem(run.spec.source.topic, prefixes) is None
    }


def stream_supervisor(
    view: CompactedView[StreamRun], config: StreamConfig, serde: Serde, *, refresh_s: float = 0.2
) -> streaming.WorkerSupervisor[str, StreamRun]:
    """Exactly one worker per RUNNING pipeline on this instance; a new run of a pipeline replaces its
    worker (the worker commits what it read before it leaves the group, so its successor starts there)."""
    return streaming.WorkerSupervisor(
        "streams",
        lambda: running_streams(view),
        lambda _, run: StreamWorker(run, config, serde),
        refresh_s=refresh_s,
    )
