"""The alert rules, as pure functions over one run's record in the monitor's ``runs`` table.

No faust, no Kafka, no clock: the caller passes ``now`` (epoch seconds). The faust agents in
``services.monitor.app`` load a record, call these functions, publish the alerts they return and store the
record they return. A record remembers which alerts it already raised, so a rule is not raised again on
every later event; whether an alert is really *sent* is decided by the alerts topic itself
(``services.monitor.alerts``), because a table change reaches its changelog only after the alert it
records went out, and a crash in between must not send it twice.

Every alert belongs to a tenant (Alert v2): a run's alerts to the run's, which RUN_ACCEPTED names and the
fold keeps (RUN_STUCK, QUALITY_THRESHOLD; ``default`` for a run whose RUN_ACCEPTED did not say, written
before RunEvent v6) or which its result names (RUN_FAILED). DEAD_LETTER_GROWTH is about the whole
dead-letter topic, not one run: it belongs to ``default``, the deployment's own tenant, and its text names
no run, pipeline or tenant.

The figures are the common fold of the run's events (``shared.progress``, kept in the record as JSON):
counted once per batch (faust is at-least-once here, a replayed event changes nothing) and bounded for a
continuous run, whose record is rewritten on every event and restored from the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts import (
    DEFAULT_TENANT,
    Alert,
    AlertKind,
    EventKind,
    PipelineResult,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunStatus,
    Severity,
    Stage,
)
from shared.progress import Figures, RuleLedger, RunProgress
from shared.spec.models import OnFail

# Orchestrator events that (re)start work; its other events are bookkeeping, not progress.
_ORCHESTRATOR_PROGRESS = frozenset({EventKind.RUN_ACCEPTED, EventKind.RUN_PLANNED, EventKind.TASK_RETRIED})
_FAILED_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})
EARLIER_RULE = "(counted by an earlier monitor)"


@dataclass(frozen=True)
class Thresholds:
    stuck_after_s: float  # used when the run's RUN_ACCEPTED does not say
    quality_max_failed_fraction: float
    dead_letter_max_per_window: int


class RunRecord(BaseModel):
    """What the monitor keeps per run (a JSON object in the faust table)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    run_id: str
    partition: int = Field(
        description="events partition of the run: its changelog and housekeeping partition"
    )
    stuck_after_s: float
    last_progress: float = Field(description="epoch seconds of the latest progress event")
    finished: bool = False
    finished_at: float | None = None
    alerted: tuple[AlertKind, ...] = ()
    progress: RunProgress = Field(description="the run's figures and quality, folded from its events")

    @model_validator(mode="before")
    @classmethod
    def _from_earlier_monitors(cls, data: Any) -> Any:
        return _upgrade(data)

    @property
    def pipeline(self) -> str | None:
        return self.progress.pipeline

    @property
    def tenant(self) -> str:
        return self.progress.tenant or DEFAULT_TENANT

    @property
    def checked_rows(self) -> int:
        return self.progress.checked_rows

    @property
    def failed_checked_rows(self) -> int:
        # Only batches whose BATCH_TRANSFORMED arrived (it follows the batch's violations): otherwise a
        # batch's failures would be counted before its rows and the fraction would overshoot.
        return self.progress.failed_checked_rows

    def with_alert(self, kind: AlertKind) -> RunRecord:
        return self.model_copy(update={"alerted": (*self.alerted, kind)})

    def to_table(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_table(cls, value: Any) -> RunRecord | None:
        return None if value is None else cls.model_validate(value)


def _upgrade(data: Any) -> Any:
    """A record stored by a monitor before the common fold (in the changelog when the monitor is upgraded
    while runs are in flight): the same pipeline and quality counts, as the fold's. Its failed rows were
    not kept per rule once settled: they stay under one rule of their own."""
    if not isinstance(data, dict) or "progress" in data:
        return data
    progress = RunProgress(run_id=str(data.get("run_id", "")), pipeline=data.get("pipeline"))
    batch_rows = {str(batch): int(rows) for batch, rows in dict(data.get("batch_rows", {})).items()}
    transform = progress.stage(Stage.TRANSFORM)
    transform.seen = dict.fromkeys(batch_rows, 1)
    transform.total = Figures(rows_in=int(data.get("settled_rows", 0)) + sum(batch_rows.values()))
    settled = RuleLedger(on_fail=OnFail.WARN, reason="", failed_rows=int(data.get("settled_failed_rows", 0)))
    progress.rules[EARLIER_RULE] = settled
    for key, rows in dict(data.get("failed_rows", {})).items():
        batch, _, rule = str(key).partition("|")
        progress.failures.setdefault(batch, {})[rule] = int(rows)
        ledger = progress.rules.setdefault(rule, RuleLedger(on_fail=OnFail.WARN, reason=""))
        ledger.failed_rows += int(rows) if batch in batch_rows else 0
    return {**data, "progress": progress}


def is_progress(event: RunEvent) -> bool:
    return event.stage is not Stage.ORCHESTRATE or event.kind in _ORCHESTRATOR_PROGRESS


def run_threshold(event: RunEvent, default: float) -> float:
    """The run's own stuck threshold from RUN_ACCEPTED (the spec's ``run.stuck_after_s``)."""
    accepted = event.payload_as(RunAccepted)
    value = accepted.stuck_after_s if accepted is not None else None
    return float(value) if value is not None and value > 0 else default


def apply_event(
    record: RunRecord | None, event: RunEvent, *, partition: int, thresholds: Thresholds
) -> tuple[RunRecord, list[Alert]]:
    """Fold one run event into the run's record; return the new record and the alerts it raises."""
    at = event.at.timestamp()
    if record is None:
        record = RunRecord(
            run_id=event.run_id,
            partition=partition,
            stuck_after_s=thresholds.stuck_after_s,
            last_progress=at,
            progress=RunProgress(run_id=event.run_id),
        )
    if record.finished:
        return record, []  # a late or replayed event of a finished run changes nothing
    progress = record.progress.model_copy(deep=True)  # records are values: the caller compares them
    progress.apply(event)  # a finished run's fold forgets its batches: only its totals stay
    changes: dict[str, Any] = {"progress": progress}
    if event.kind is EventKind.RUN_ACCEPTED:
        changes["stuck_after_s"] = run_threshold(event, thresholds.stuck_after_s)
    if is_progress(event):
        changes["last_progress"] = max(record.last_progress, at)
    if event.kind is EventKind.RUN_FINISHED:
        changes.update(finished=True, finished_at=at)
    record = record.model_copy(update=changes)
    alert = quality_alert(record, event, thresholds.quality_max_failed_fraction)
    if alert is None:
        return record, []
    return record.with_alert(alert.kind), [alert]


def quality_alert(record: RunRecord, event: RunEvent, max_failed_fraction: float) -> Alert | None:
    """QUALITY_THRESHOLD: any rule with ``on_fail: fail`` violated, or failed rows above the fraction."""
    if record.finished or AlertKind.QUALITY_THRESHOLD in record.alerted:
        return None
    violation = event.payload_as(QualityViolation)
    if violation is not None and violation.on_fail is OnFail.FAIL:
        return _alert(
            record,
            AlertKind.QUALITY_THRESHOLD,
            Severity.WARNING,
            f"quality rule {violation.rule} failed in run {record.run_id}: {violation.reason}",
            rule=violation.rule,
            on_fail="fail",
        )
    checked, failed = record.checked_rows, record.failed_checked_rows
    if checked == 0 or failed / checked <= max_failed_fraction:
        return None
    return _alert(
        record,
        AlertKind.QUALITY_THRESHOLD,
        Severity.WARNING,
        f"{failed} of {checked} checked rows ({failed / checked:.1%}) of run {record.run_id} failed quality "
        f"rules, above the {max_failed_fraction:.1%} limit",
        failed_rows=str(failed),
        checked_rows=str(checked),
    )


def is_stuck(record: RunRecord, now: float) -> bool:
    """An unfinished run without a progress event for longer than its threshold."""
    return not record.finished and now - record.last_progress > record.stuck_after_s


def stuck_alert(record: RunRecord, now: float) -> Alert | None:
    """RUN_STUCK, once per run (``is_stuck``)."""
    if not is_stuck(record, now) or AlertKind.RUN_STUCK in record.alerted:
        return None
    idle = now - record.last_progress
    return _alert(
        record,
        AlertKind.RUN_STUCK,
        Severity.WARNING,
        f"run {record.run_id} made no progress for {idle:.0f}s (threshold {record.stuck_after_s:g}s)",
        idle_s=f"{idle:.0f}",
        stuck_after_s=f"{record.stuck_after_s:g}",
    )


def should_forget(record: RunRecord, now: float, retention_s: float) -> bool:
    return record.finished and record.finished_at is not None and now - record.finished_at > retention_s


def result_alert(result: PipelineResult) -> Alert | None:
    """RUN_FAILED (critical) for a FAILED or TIMED_OUT result, naming every error."""
    if result.status not in _FAILED_STATUSES:
        return None
    errors = "; ".join(f"{e.error_class}: {e.message}" for e in result.errors) or "no error details"
    pipeline = result.pipeline or "an unnamed pipeline"
    return Alert(
        kind=AlertKind.RUN_FAILED,
        severity=Severity.CRITICAL,
        message=f"run {result.run_id} of {pipeline} {result.status}: {errors}",
        run_id=result.run_id,
        pipeline=result.pipeline,
        tenant=result.tenant,
        labels={"status": result.status.value, "errors": str(len(result.errors))},
    )


def dead_letter_growth_alert(
    before: int, after: int, limit: int, window_start: float, window_s: float
) -> Alert | None:
    """DEAD_LETTER_GROWTH once per window: only the dead letter that takes the count past ``limit``
    raises it (a replayed one finds the count already past, so it cannot raise it again)."""
    if not before <= limit < after:
        return None
    start = datetime.fromtimestamp(window_start, UTC).isoformat()
    return Alert(
        kind=AlertKind.DEAD_LETTER_GROWTH,
        severity=Severity.WARNING,
        message=f"more than {limit} dead letters in the {window_s:g}s window starting {start}",
        tenant=DEFAULT_TENANT,  # the whole topic's: the deployment's own alert
        labels={"window_start": start, "window_s": f"{window_s:g}", "limit": str(limit)},
    )


def _alert(record: RunRecord, kind: AlertKind, severity: Severity, message: str, **labels: str) -> Alert:
    return Alert(
        kind=kind,
        severity=severity,
        message=message,
        run_id=record.run_id,
        pipeline=record.pipeline,
        tenant=record.tenant,
        labels=labels,
    )
