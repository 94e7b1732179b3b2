"""The transform stage on one batch: apply the spec's steps, check its quality rules, forward the kept
rows, quarantine the rest, report. What the batch's transaction must hold, as ``Output``s.

Two processes run it. The transform service, on every batch it reads from ``Topics.DATA_EXTRACTED``
(``services.transform``). And the extract service, on the rows it has just read, when it *chains* the
transform to extract (``AOETL_CHAIN_TRANSFORM``, ``services.extract.chaining``): the batch then never
crosses Kafka untransformed, so one Arrow encode and decode, one produce, one fetch and one Kafka
transaction per batch are saved (measured in the issue notes). Both give the same outputs for the same
rows, because both are this code: the transformed batch on ``Topics.DATA_TRANSFORMED`` (``stage``
TRANSFORM), its QUALITY_VIOLATION and BATCH_TRANSFORMED events, its quarantined rows as dead letters.
Whoever runs it puts all of them in the Kafka transaction of the message they came from, so a crash can
neither lose nor duplicate any of them, and the orchestrator's fold (``shared.progress``) cannot tell
the two apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

from shared.batch import encode_table
from shared.contracts import (
    DataBatch,
    DeadLetter,
    ErrorInfo,
    EventKind,
    Origin,
    QualityViolation,
    RunEvent,
    SampleValue,
    Stage,
)
from shared.kafka.topics import Topics
from shared.processing import Output
from shared.spec.models import OnFail
from shared.transform.engine import EngineCache
from shared.transform.quality import QualityChecker

SAMPLE_BUDGET = 2000  # characters of JSON of the sample rows of one QUALITY_VIOLATION event
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class BatchTransformer:
    """The transform stage's state: engines by steps, checkers by rules, both cached across batches (a
    pipeline's batches share them). Not thread-safe: one per processing loop."""

    def __init__(self, topic: Callable[[str], str], instance: str, *, mask_salt: bytes):
        self._topic = topic
        self._instance = instance
        self._engines = EngineCache(mask_salt=mask_salt)
        self._checkers: dict[str, QualityChecker] = {}

    def close(self) -> None:
        self._engines.close()

    def _checker(self, batch: DataBatch) -> QualityChecker:
        key = json.dumps([r.model_dump(mode="json") for r in batch.spec.quality], sort_keys=True)
        checker = self._checkers.get(key)
        if checker is None:
            checker = self._checkers[key] = QualityChecker(batch.spec.quality)
        return checker

    def transform(
        self, batch: DataBatch, rows: pa.Table, key: str | bytes, origin: Origin
    ) -> Iterator[Output]:
        """The outputs of ``batch`` whose rows are ``rows`` (its ``payload`` is not read: a chained
        extract has not encoded it). ``key``: the transformed batch's Kafka key (a batch id for one-shot
        runs, the source partition for continuous ones, whose batches must reach load in order);
        ``origin``: where the batch's rows were read, as a dead letter names it."""
        started = time.monotonic()
        table = self._engines.get(batch.spec.transforms).apply(rows)
        outcome = self._checker(batch).check(table)
        events, dead_letters = self._topic(Topics.EVENTS), self._topic(Topics.DEAD_LETTERS)
        for violation in outcome.violations:
            yield Output(
                events,
                batch.run_id,
                RunEvent(
                    run_id=batch.run_id,
                    kind=EventKind.QUALITY_VIOLATION,
                    stage=Stage.TRANSFORM,
                    task_id=batch.task_id,
                    batch_id=batch.batch_id,
                    rows_rejected=violation.failed_rows if violation.on_fail is OnFail.QUARANTINE else 0,
                    payload=QualityViolation(
                        rule=violation.rule,
                        on_fail=violation.on_fail,
                        reason=violation.reason,
                        failed_rows=violation.failed_rows,
                        sample=event_sample(violation.sample),
                        rows_checked=violation.rows_checked,
                        values=violation.values,
                    ),
                    instance=self._instance,
                ),
            )
        for violation, quarantined in outcome.quarantined:
            yield Output(
                dead_letters,
                batch.run_id,
                DeadLetter(
                    origin=origin,
                    stage=Stage.TRANSFORM,
                    error=ErrorInfo(error_class="QualityRuleViolation", message=violation.reason),
                    run_id=batch.run_id,
                    rule=violation.rule,
                    payload=encode_table(quarantined),
                    payload_format="arrow_ipc",
                ),
            )
        if outcome.fail:
            return  # the QUALITY_VIOLATION(fail) event ends the run; nothing of this batch moves on
        kept = outcome.kept
        yield Output(
            self._topic(Topics.DATA_TRANSFORMED),
            key,
            batch.model_copy(
                update={"stage": Stage.TRANSFORM, "row_count": kept.num_rows, "payload": encode_table(kept)}
            ),
        )
        yield Output(
            events,
            batch.run_id,
            RunEvent(
                run_id=batch.run_id,
                kind=EventKind.BATCH_TRANSFORMED,
                stage=Stage.TRANSFORM,
                task_id=batch.task_id,
                batch_id=batch.batch_id,
                rows_in=batch.row_count,
                rows_out=kept.num_rows,
                rows_rejected=batch.row_count - kept.num_rows - _filtered(batch.row_count, table.num_rows),
                duration_ms=int((time.monotonic() - started) * 1000),
                instance=self._instance,
            ),
        )


def event_sample(rows: list[dict[str, object]]) -> list[dict[str, SampleValue]]:
    """The sample rows an event carries: whole rows, as many as fit in ``SAMPLE_BUDGET`` characters of
    JSON (an event is a report, not a copy of the data), every value one Avro can hold."""
    kept: list[dict[str, SampleValue]] = []
    used = 0
    for row in rows:
        values = {str(column): _sample_value(value) for column, value in row.items()}
        used += len(json.dumps(values))
        if used > SAMPLE_BUDGET:
            break
        kept.append(values)
    return kept


def _sample_value(value: object) -> SampleValue:
    if value is None or isinstance(value, bool | float | str):
        return value
    if isinstance(value, int) and _LONG_MIN <= value <= _LONG_MAX:
        return value
    return str(value)  # an unsigned 64-bit value past Avro's long, or anything not JSON-like


def _filtered(rows_in: int, rows_after_steps: int) -> int:
    """Rows that filter/dedupe steps removed on purpose: not 'rejected', just not wanted."""
    return max(rows_in - rows_after_steps, 0)


def batch_failed(batch: DataBatch, exc: BaseException, topic: str, instance: str) -> Output:
    """The BATCH_FAILED event of a batch the stage could not transform (the orchestrator fails the run
    on a terminal error; the batch itself is dead-lettered by the processing loop)."""
    return Output(
        topic,
        batch.run_id,
        RunEvent(
            run_id=batch.run_id,
            kind=EventKind.BATCH_FAILED,
            stage=Stage.TRANSFORM,
            task_id=batch.task_id,
            batch_id=batch.batch_id,
            rows_in=batch.row_count,
            error=ErrorInfo.from_exception(exc),
            instance=instance,
        ),
    )
