"""The alert rules, as pure functions over one run's record in the monitor's ``runs`` table.

No faust, no Kafka, no clock: the caller passes ``now`` (epoch seconds). The faust agents in
``services.monitor.app`` load a record, call these functions, publish the alerts they return and store the
record they return. A record remembers which alerts it already raised, so every rule fires at most once
per run, also after a restart (the table is restored from its changelog).

Counting is idempotent against redelivery (faust is at-least-once here): rows are kept per batch id and
failed rows per (batch id, rule), so a replayed event overwrites instead of adding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Alert, AlertKind, EventKind, PipelineResult, RunEvent, RunStatus, Severity, Stage

# Orchestrator events that (re)start work; its other events are bookkeeping, not progress.
_ORCHESTRATOR_PROGRESS = frozenset({EventKind.RUN_ACCEPTED, EventKind.RUN_PLANNED, EventKind.TASK_RETRIED})
_FAILED_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})
# Batches counted one by one (so a redelivered event overwrites instead of adding). Older ones are folded
# into totals: a continuous run transforms batches for as long as it runs, and its record (rewritten on
# every event, and restored from the changelog) must not grow with them. faust redelivers only what it had
# not committed, far fewer than this many batches.
MAX_TRACKED_BATCHES = 1000


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
    pipeline: str | None = None
    stuck_after_s: float
    last_progress: float = Field(description="epoch seconds of the latest progress event")
    finished: bool = False
    finished_at: float | None = None
    alerted: tuple[AlertKind, ...] = ()
    batch_rows: dict[str, int] = Field(default_factory=dict, description="transformed batch id -> rows in")
    failed_rows: dict[str, int] = Field(default_factory=dict, description="'<batch id>|<rule>' -> rows")
    settled_rows: int = Field(0, description="rows in of the batches folded out of batch_rows")
    settled_failed_rows: int = Field(0, description="their failed rows")

    @property
    def checked_rows(self) -> int:
        return self.settled_rows + sum(self.batch_rows.values())

    @property
    def failed_checked_rows(self) -> int:
        # Only batches whose BATCH_TRANSFORMED arrived (it follows the batch's violations): otherwise a
        # batch's failures would be counted before its rows and the fraction would overshoot.
        return self.settled_failed_rows + sum(
            n for key, n in self.failed_rows.items() if key.split("|", 1)[0] in self.batch_rows
        )

    def settled(self) -> RunRecord:
        """The record with its oldest batches folded into the totals, down to ``MAX_TRACKED_BATCHES``."""
        excess = len(self.batch_rows) - MAX_TRACKED_BATCHES
        if excess <= 0 and len(self.failed_rows) <= 4 * MAX_TRACKED_BATCHES:
            return self
        folded_ids = set(list(self.batch_rows)[: max(excess, 0)])  # dicts keep arrival order: oldest first
        batch_rows = {b: n for b, n in self.batch_rows.items() if b not in folded_ids}
        failed_rows: dict[str, int] = {}
        settled_failed = self.settled_failed_rows
        for key, n in self.failed_rows.items():
            if key.split("|", 1)[0] in folded_ids:
                settled_failed += n
            else:
                failed_rows[key] = n
        # Failures of batches never transformed are not counted anyway: keep only the newest of them.
        orphans = [k for k in failed_rows if k.split("|", 1)[0] not in batch_rows]
        for key in orphans[: max(len(failed_rows) - 4 * MAX_TRACKED_BATCHES, 0)]:
            del failed_rows[key]
        return self.model_copy(
            update={
                "batch_rows": batch_rows,
                "failed_rows": failed_rows,
                "settled_rows": self.settled_rows
                + sum(n for b, n in self.batch_rows.items() if b in folded_ids),
                "settled_failed_rows": settled_failed,
            }
        )

    def with_alert(self, kind: AlertKind) -> RunRecord:
        return self.model_copy(update={"alerted": (*self.alerted, kind)})

    def to_table(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_table(cls, value: Any) -> RunRecord | None:
        return None if value is None else cls.model_validate(value)


def is_progress(event: RunEvent) -> bool:
    return event.stage is not Stage.ORCHESTRATE or event.kind in _ORCHESTRATOR_PROGRESS


def run_threshold(event: RunEvent, default: float) -> float:
    """The run's own stuck threshold from RUN_ACCEPTED's details (the spec's ``run.stuck_after_s``)."""
    try:
        value = float(event.details["stuck_after_s"])
    except (KeyError, ValueError):
        return default
    return value if value > 0 else default


def apply_event(
    record: RunRecord | None, event: RunEvent, *, partition: int, thresholds: Thresholds
) -> tuple[RunRecord, list[Alert]]:
    """Fold one run event into the run's record; return the new record and the alerts it raises."""
    at = event.at.timestamp()
    if record is None:
        record = RunRecord(
            run_id=event.run_id, partition=partition, stuck_after_s=thresholds.stuck_after_s, last_progress=at
        )
    if record.finished:
        return record, []  # a late or replayed event of a finished run changes nothing
    changes: dict[str, Any] = {}
    if event.kind is EventKind.RUN_ACCEPTED:
        changes["pipeline"] = event.details.get("pipeline") or record.pipeline
        changes["stuck_after_s"] = run_threshold(event, thresholds.stuck_after_s)
    if is_progress(event):
        changes["last_progress"] = max(record.last_progress, at)
    if event.kind is EventKind.RUN_FINISHED:
        # The counters only matter while the run can still raise a quality alert.
        changes.update(finished=True, finished_at=at, batch_rows={}, failed_rows={})
    elif event.kind is EventKind.BATCH_TRANSFORMED and event.batch_id:
        changes["batch_rows"] = {**record.batch_rows, event.batch_id: event.rows_in}
    elif event.kind is EventKind.QUALITY_VIOLATION:
        key = f"{event.batch_id or ''}|{event.details.get('rule', '?')}"
        changes["failed_rows"] = {**record.failed_rows, key: _int(event.details.get("failed_rows"))}
    record = record.model_copy(update=changes).settled()
    alert = quality_alert(record, event, thresholds.quality_max_failed_fraction)
    if alert is None:
        return record, []
    return record.with_alert(alert.kind), [alert]


def quality_alert(record: RunRecord, event: RunEvent, max_failed_fraction: float) -> Alert | None:
    """QUALITY_THRESHOLD: any rule with ``on_fail: fail`` violated, or failed rows above the fraction."""
    if record.finished or AlertKind.QUALITY_THRESHOLD in record.alerted:
        return None
    if event.kind is EventKind.QUALITY_VIOLATION and event.details.get("on_fail") == "fail":
        rule = event.details.get("rule", "?")
        reason = event.details.get("reason", "a data-quality rule failed")
        return _alert(
            record,
            AlertKind.QUALITY_THRESHOLD,
            Severity.WARNING,
            f"quality rule {rule} failed in run {record.run_id}: {reason}",
            rule=rule,
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


def stuck_alert(record: RunRecord, now: float) -> Alert | None:
    """RUN_STUCK: an unfinished run without a progress event for longer than its threshold."""
    if record.finished or AlertKind.RUN_STUCK in record.alerted:
        return None
    idle = now - record.last_progress
    if idle <= record.stuck_after_s:
        return None
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
        labels={"window_start": start, "window_s": f"{window_s:g}", "limit": str(limit)},
    )


def _alert(record: RunRecord, kind: AlertKind, severity: Severity, message: str, **labels: str) -> Alert:
    return Alert(
        kind=kind,
        severity=severity,
        message=message,
        run_id=record.run_id,
        pipeline=record.pipeline,
        labels=labels,
    )


def _int(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0
