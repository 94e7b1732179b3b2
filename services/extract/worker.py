"""What the extract service does with one task: read its split, cut it into batches, report the split.

The task's batches (or, chained, what the transform stage makes of them: ``services.extract.handoff``)
and its SPLIT_EXTRACTED event are produced in ONE Kafka transaction (the extract
service takes one task per transaction), so a split is either wholly visible downstream or not at all; a
retried task emits the same deterministic batch ids, which the sinks deduplicate. Batches are yielded one
by one, so the producer streams them out and memory stays bounded by a batch, not by the split.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from services.extract.handoff import Handoff, ReadBatch
from shared.connectors import read_split
from shared.contracts import (
    CursorKind,
    ErrorInfo,
    EventKind,
    ExtractTask,
    Origin,
    RunEvent,
    SplitExtracted,
    Stage,
    TaskFailed,
)
from shared.processing import MessageContext, Output
from shared.spec.models import PostgresSource
from shared.tracing import spans as tracing


def extract(
    task: ExtractTask, handoff: Handoff, events_topic: str, instance: str, origin: Origin
) -> Iterator[Output]:
    """The task's batches, handed on as ``handoff`` says, then its SPLIT_EXTRACTED event. ``origin``: the
    task's place in the tasks topic (a chained transform's dead letters name it)."""
    started = time.monotonic()
    seq = rows = 0
    spec = task.spec
    cursor = CursorMax(spec.source.cursor_column if isinstance(spec.source, PostgresSource) else None)
    for table in read_split(spec.source, task.split, spec.run.batch_rows, payload=task.payload):
        cursor.update(table)
        batch_id = f"{task.task_id}:{seq}"
        # a span per batch, ended before the yield (a span open across it would stay current in the
        # caller's code), whose context the batch carries on: transform and load continue it
        with tracing.child(
            "extract batch", {**tracing.describe(task), "aoetl.stage": Stage.EXTRACT.value}
        ) as span:
            span.set_attributes({"aoetl.batch_id": batch_id, "aoetl.batch.rows": table.num_rows})
            headers = tracing.current_headers()
        read = ReadBatch(task.run_id, task.task_id, batch_id, seq, spec, table, batch_id, origin, headers)
        yield from handoff.hand_off(read)
        seq += 1
        rows += table.num_rows
    yield Output(
        events_topic,
        task.run_id,
        RunEvent(
            run_id=task.run_id,
            kind=EventKind.SPLIT_EXTRACTED,
            stage=Stage.EXTRACT,
            task_id=task.task_id,
            rows_out=rows,
            batches=seq,
            duration_ms=int((time.monotonic() - started) * 1000),
            payload=SplitExtracted(
                attempt=task.attempt,
                split_index=task.split.index,
                cursor_max=cursor.text(),
                cursor_kind=cursor.kind(),
            ),
            instance=instance,
        ),
    )


class CursorMax:
    """The greatest value of an incremental source's cursor column in this split, reported with the
    split so the orchestrator can record how far the pipeline has read (its watermark)."""

    def __init__(self, column: str | None):
        self.column = column
        self.value: object = None

    def update(self, table: pa.Table) -> None:
        if self.column is None or self.column not in table.column_names:
            return
        top = pc.max(table.column(self.column)).as_py()
        if top is not None and (self.value is None or top > self.value):
            self.value = top

    def text(self) -> str | None:
        return None if self.value is None else str(self.value)

    def kind(self) -> CursorKind:
        return CursorKind.NUMBER if isinstance(self.value, int | float | Decimal) else CursorKind.TEXT


def task_failed(
    task: ExtractTask, exc: BaseException, ctx: MessageContext, topic: str, instance: str
) -> Output:
    """Tell the orchestrator; it retries transient failures and fails the run on terminal ones."""
    return Output(
        topic,
        task.run_id,
        RunEvent(
            run_id=task.run_id,
            kind=EventKind.TASK_FAILED,
            stage=Stage.EXTRACT,
            task_id=task.task_id,
            error=ErrorInfo.from_exception(exc),
            payload=TaskFailed(
                attempt=task.attempt,
                origin=ctx.origin(),
            ),
            instance=instance,
        ),
    )
