"""What the load service does: apply each transformed batch to its destination exactly once, and apply
the orchestrator's end-of-run control (finalize or abort).

The sink is outside Kafka, so this stage is not a Kafka transaction: each sink records the batch id in the
same atomic step as the rows (a database transaction, an atomically renamed file) and answers a repeated
batch with ``applied=False``. The BATCH_LOADED event is produced only after the sink committed, then the
offset is committed; a crash in between repeats the write, which the sink turns into a no-op.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from services.load.sinks import Sink, open_sink
from shared.batch import decode_table
from shared.contracts import (
    BatchLoaded,
    ControlAction,
    DataBatch,
    ErrorInfo,
    EventKind,
    RunControl,
    RunEvent,
    RunFinalized,
    Stage,
)
from shared.kafka.topics import Topics
from shared.processing import Output
from shared.settings import KafkaSettings
from shared.spec.models import DedupeStep, Destination, PipelineSpec

# Open sinks kept per replica, least recently used closed first. Each holds a connection (a PostgreSQL
# backend, a DuckDB file): kept for every destination ever seen, a long-lived replica serving many tables
# exhausted PostgreSQL's max_connections (found by the fault soak). A closed sink reopens on its next batch.
MAX_OPEN_SINKS = 8


def dedupe_keys(spec: PipelineSpec) -> list[str]:
    """Keys of the run's dedupe steps: the transform dedupes within a batch, the sink across batches."""
    keys: list[str] = []
    for step in spec.transforms:
        if isinstance(step, DedupeStep):
            keys.extend(k for k in step.keys if k not in keys)
    return keys


class LoadWorker:
    def __init__(self, topic: Callable[[str], str], instance: str, kafka: KafkaSettings | None):
        """``kafka``: the service's own settings, for Kafka destinations (their security included)."""
        self._topic = topic
        self._instance = instance
        self._kafka = kafka
        self._sinks: OrderedDict[str, Sink] = OrderedDict()

    def sink(self, destination: Destination) -> Sink:
        key = json.dumps(destination.model_dump(mode="json"), sort_keys=True)
        sink = self._sinks.get(key)
        if sink is None:
            sink = self._sinks[key] = open_sink(
                destination, kafka=self._kafka, schemas_topic=self._topic(Topics.SCHEMAS)
            )
            while len(self._sinks) > MAX_OPEN_SINKS:
                self._sinks.popitem(last=False)[1].close()
        self._sinks.move_to_end(key)
        return sink

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()

    def _event(self, run_id: str, kind: EventKind, **kw: object) -> Output:
        event = RunEvent(run_id=run_id, kind=kind, stage=Stage.LOAD, instance=self._instance, **kw)
        return Output(self._topic(Topics.EVENTS), run_id, event)

    def load(self, batch: DataBatch) -> Iterator[Output]:
        started = time.monotonic()
        table = decode_table(batch.payload)
        result = self.sink(batch.spec.destination).write(
            batch.run_id, batch.batch_id, table, dedupe_keys=dedupe_keys(batch.spec)
        )
        yield self._event(
            batch.run_id,
            EventKind.BATCH_LOADED,
            task_id=batch.task_id,
            batch_id=batch.batch_id,
            rows_in=table.num_rows,
            rows_out=result.rows_written,
            rows_rejected=result.rows_deduplicated,
            duration_ms=int((time.monotonic() - started) * 1000),
            payload=BatchLoaded(applied=result.applied, bytes=result.bytes_written),
        )

    def control(self, control: RunControl) -> Iterator[Output]:
        sink = self.sink(control.spec.destination)
        if control.action is ControlAction.FINALIZE:
            sink.finalize(control.run_id)
        else:
            sink.abort(control.run_id)
        yield self._event(
            control.run_id, EventKind.RUN_FINALIZED, payload=RunFinalized(action=control.action)
        )

    def failed(self, value: DataBatch | RunControl, exc: BaseException) -> Output:
        if isinstance(value, RunControl):
            # a finalize that cannot be applied fails the run with the destination's reason
            return self._event(
                value.run_id,
                EventKind.RUN_FINALIZED,
                error=ErrorInfo.from_exception(exc),
                payload=RunFinalized(action=value.action),
            )
        return self._event(
            value.run_id,
            EventKind.BATCH_FAILED,
            task_id=value.task_id,
            batch_id=value.batch_id,
            rows_in=value.row_count,
            error=ErrorInfo.from_exception(exc),
        )
