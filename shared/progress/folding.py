"""The one fold of a run's events into its progress, for every reader of run events: the orchestrator (the
figures of its result, and when everything is loaded), the monitor (the quality fraction), the gateway
(``GET /runs/{id}``) and the CLI (``aoetl run``'s progress bars, ``aoetl status``). They used to fold
the events each their own way, and disagreed.

Pure: no I/O and no clock (events carry their times; what needs the time now takes it as an argument).
Serialisable: the monitor keeps a run's progress as JSON in a faust table (``model_dump(mode="json")``
and back with ``model_validate``).

**Whose run.** RUN_ACCEPTED names the run's tenant (RunEvent v6; ``None`` for older events), and the fold
keeps it, so a reader that learns about a run from its events (the monitor's alerts, the gateway) knows
which tenant it belongs to. **When and why**: ``accepted_at`` (RUN_ACCEPTED), ``started_at`` (the earliest
event after it: planning or work), ``finished_at`` (RUN_FINISHED), and ``last_error``, the error of the
latest event that carried one (by event time, so a redelivered older event does not replace it; already
redacted, ``ErrorInfo.message`` is): what the run history shows (``services.monitor.history``).

The ledgers that count (a stage's units, a rule's failures) are in ``shared.progress.ledgers``.

**Counted once.** Every stage's figures are counted once per *unit*: a batch id for transform, load and
a continuous run's extract (STREAM_PROGRESS), a task id for a one-shot extract (SPLIT_EXTRACTED: a task's
batches and that event leave in one Kafka transaction). An event without its unit's id counts once per
event id. An event for a unit already counted (a redelivered message, a task re-run after healing, a
replay) changes nothing, with one exception. Load is at-least-once with an idempotent sink: a
redelivered batch gives a second BATCH_LOADED with ``applied=False``, and the *applied* event's figures
win, whichever of the two arrives first. They are the real ones: for a batch it had applied before, a
sink reports what its ledger kept of the first delivery, which is the rows written (PostgreSQL, DuckDB,
files) but no deduplicated rows and no time, and nothing at all from the Kafka sink, which only knows
the batches it produced itself. The non-applied event still counts the batch until an applied one
arrives, because that one can be missing: load crashed after the sink committed, before the event left
(the ledger's rows then still count). Otherwise the first event of a unit wins: after a healed task
runs again, the sink keeps the first delivery's rows, and transform's first figures are the ones that
match them.

**Bounded.** Each stage tracks at most ``window`` units one by one (``MAX_TRACKED_BATCHES`` unless
said); past that its oldest units are settled into the stage's totals and forgotten, so a continuous run,
which never ends, keeps a bounded record. The counts stay exact as long as a duplicate arrives before
``window`` newer units of its stage did: duplicates are the uncommitted tail of a consumer delivered
again (load commits after each batch, the monitor's faust every few seconds) or a re-run task's own
batches, far fewer. ``window=None`` tracks every unit: the orchestrator's one-shot runs, whose finalize
must be exact whatever arrives, and whose units are bounded by their plan. A finished run (RUN_FINISHED)
settles everything and counts nothing more, so its figures are those of its result and a finished run
costs a few numbers: a late duplicate, or a dead letter re-driven after the run failed, changes nothing.

**Bytes.** A load unit's bytes (BatchLoaded ``bytes``, RunEvent v11) count like its rows, the applied
delivery's winning; the load total's ``bytes`` is None as soon as one counted unit did not say (its sink
does not know them, or its event predates v11): a partial sum would pass for the whole.

**Quality.** A rule's failed rows are kept per (batch, rule) and count once the batch's BATCH_TRANSFORMED
(which follows its violations) is in; the checked rows are the ``rows_in`` of transformed batches; a
rule's fraction is its failed rows over the checked rows, exact under redelivery like the figures.
Failures of batches never transformed (a rule that failed the batch) are no checked rows: at most
``4 * window`` batches' failures are kept, the oldest of those dropped first.

**Per rule** (``rule_totals``: a result's quality outcomes): a rule's checked rows are those of transformed
batches the transform evaluated it on: for ``quarantine`` every row the steps kept (``rows_out +
rows_rejected``), for ``warn``/``fail`` the rows no quarantine rule took (``rows_out``). A batch a ``fail``
rule stopped is never transformed: its failures count with the rows its violations say were checked
(``rows_checked``, RunEvent v7), not at all for an older event, so a fraction never exceeds one. A rule
keeps its first ``MAX_SAMPLES`` distinct failing values (``values``, v7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import (
    MAX_SAMPLES,
    BatchLoaded,
    ErrorInfo,
    EventKind,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunFinished,
    RunPlanned,
    RunStatus,
    Stage,
    StageStats,
)
from shared.progress.ledgers import Figures, RuleLedger, RuleQuality, RuleTotals, StageLedger
from shared.spec.models import OnFail

MAX_TRACKED_BATCHES = 1000  # per stage; read when a fold is created, so tests may lower it
ORPHAN_FACTOR = 4  # failures are kept for at most ORPHAN_FACTOR * window batches
FIGURE_STAGES = (Stage.EXTRACT, Stage.TRANSFORM, Stage.LOAD)


class RunProgress(BaseModel):
    """The progress of one run, folded from its events (``apply``) in any order they arrive in."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    window: int | None = Field(default_factory=lambda: MAX_TRACKED_BATCHES)
    pipeline: str | None = None
    tenant: str | None = Field(None, description="from RUN_ACCEPTED (RunEvent v6); None before it says")
    continuous: bool = False
    stuck_after_s: int | None = None
    accepted_at: datetime | None = None
    splits_planned: int | None = None
    stages: dict[Stage, StageLedger] = Field(
        default_factory=lambda: {stage: StageLedger() for stage in FIGURE_STAGES}
    )
    rules: dict[str, RuleLedger] = Field(default_factory=dict)
    failures: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="batch id -> rule -> failed rows, until the batch is settled"
    )
    checked_of_failures: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="batch id -> rule -> rows it checked (v7), kept as failures"
    )
    finished: bool = False
    status: RunStatus | None = None
    finished_at: datetime | None = None
    started_at: datetime | None = Field(None, description="the earliest event after acceptance: work began")
    last_error: ErrorInfo | None = Field(None, description="the error of the latest event that carried one")
    last_error_at: datetime | None = None

    # ------------------------------------------------------------------------------------ reading
    def stage(self, stage: Stage) -> StageLedger:
        return self.stages[stage]

    def stage_stats(self) -> list[StageStats]:
        return [self.stages[s].stats(s) for s in FIGURE_STAGES]

    @property
    def splits_extracted(self) -> int:
        return 0 if self.continuous else self.stages[Stage.EXTRACT].counted

    def split_batches(self, task_id: str) -> int | None:
        """How many batches a one-shot task's split produced, once it is extracted."""
        return self.stages[Stage.EXTRACT].seen.get(task_id)

    @property
    def batches_expected(self) -> int:
        """Batches the extracted splits produced (a continuous run's extracted batches)."""
        return self.stages[Stage.EXTRACT].total.batches

    @property
    def checked_rows(self) -> int:
        return self.stages[Stage.TRANSFORM].total.rows_in

    @property
    def failed_checked_rows(self) -> int:
        """Failed rows over every rule (a row failing two rules counts twice)."""
        return sum(r.failed_rows for r in self.rules.values())

    def quality(self) -> list[RuleQuality]:
        checked = self.checked_rows
        return [
            RuleQuality(name, r.on_fail, r.failed, r.reason, r.failed_rows, checked)
            for name, r in self.rules.items()
        ]

    def rows_checked_by(self, on_fail: OnFail) -> int:
        """Rows of the transformed batches that a rule of this level was evaluated on."""
        total = self.stages[Stage.TRANSFORM].total
        return total.rows_out + (total.rows_rejected if on_fail is OnFail.QUARANTINE else 0)

    def rule_totals(self) -> list[RuleTotals]:
        transform = self.stages[Stage.TRANSFORM]
        totals = []
        for name, rule in self.rules.items():
            checked = self.rows_checked_by(rule.on_fail)
            failed = rule.failed_rows
            for batch, of_batch in self.failures.items():
                rows_checked = self.checked_of_failures.get(batch, {}).get(name)
                if name in of_batch and rows_checked is not None and batch not in transform.seen:
                    failed, checked = failed + of_batch[name], checked + rows_checked
            totals.append(RuleTotals(name, rule.on_fail, rule.failed, checked, failed, tuple(rule.samples)))
        return totals

    def elapsed(self, now: datetime) -> timedelta | None:
        """Time since the run was accepted: until now, or until it finished."""
        if self.accepted_at is None:
            return None
        return (self.finished_at or now) - self.accepted_at

    # ------------------------------------------------------------------------------------ folding
    def apply(self, event: RunEvent) -> None:
        if self.finished:
            return  # a finished run's figures are its result's
        if event.kind is not EventKind.RUN_ACCEPTED and event.kind is not EventKind.RUN_FINISHED:
            self.started_at = event.at if self.started_at is None else min(self.started_at, event.at)
        if event.error is not None and (self.last_error_at is None or event.at >= self.last_error_at):
            self.last_error, self.last_error_at = event.error, event.at
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)

    def apply_all(self, events: Iterable[RunEvent]) -> RunProgress:
        for event in events:
            self.apply(event)
        return self

    def _accepted(self, event: RunEvent) -> None:
        self.accepted_at = self.accepted_at or event.at
        accepted = event.payload_as(RunAccepted)
        if accepted is not None:
            self.pipeline = accepted.pipeline or self.pipeline
            self.tenant = accepted.tenant or self.tenant
            self.continuous = accepted.continuous
            self.stuck_after_s = accepted.stuck_after_s

    def _planned(self, event: RunEvent) -> None:
        planned = event.payload_as(RunPlanned)
        if planned is not None and self.splits_planned is None:
            self.splits_planned = len(planned.splits)

    def _split_extracted(self, event: RunEvent) -> None:
        figures = Figures(event.rows_out, event.rows_out, 0, event.batches, event.duration_ms)
        self._record(Stage.EXTRACT, event.task_id or event.event_id, figures)

    def _stream_progress(self, event: RunEvent) -> None:
        if event.batch_id:  # a heartbeat carries no batch
            figures = Figures(event.rows_out, event.rows_out, 0, 1, event.duration_ms)
            self._record(Stage.EXTRACT, event.batch_id, figures)

    def _transformed(self, event: RunEvent) -> None:
        key = event.batch_id or event.event_id
        figures = Figures(event.rows_in, event.rows_out, event.rows_rejected, 1, event.duration_ms)
        if self.stages[Stage.TRANSFORM].record(key, figures):
            for rule, rows in self.failures.get(key, {}).items():
                self.rules[rule].failed_rows += rows
        for settled in self.stages[Stage.TRANSFORM].settle(self.window):
            self.failures.pop(settled, None)  # their failed rows are counted, nothing can change them
            self.checked_of_failures.pop(settled, None)

    def _loaded(self, event: RunEvent) -> None:
        loaded = event.payload_as(BatchLoaded)
        applied = loaded.applied if loaded is not None else True  # v1-v3 readers' default
        written = loaded.bytes if loaded is not None else None
        figures = Figures(
            event.rows_in,
            event.rows_out,
            event.rows_rejected,
            1,
            event.duration_ms,
            applied=applied,
            bytes_written=written or 0,
            bytes_unknown=int(written is None),
        )
        self._record(Stage.LOAD, event.batch_id or event.event_id, figures)

    def _violation(self, event: RunEvent) -> None:
        violation = event.payload_as(QualityViolation)
        if violation is None:
            return
        rule = self.rules.get(violation.rule)
        if rule is None:
            rule = self.rules[violation.rule] = RuleLedger(on_fail=violation.on_fail, reason=violation.reason)
        rule.on_fail, rule.reason = violation.on_fail, violation.reason
        rule.failed = rule.failed or violation.on_fail is OnFail.FAIL
        batch = event.batch_id or ""
        of_batch = self.failures.setdefault(batch, {})
        if violation.rule in of_batch:
            return  # counted once
        of_batch[violation.rule] = violation.failed_rows
        if violation.rows_checked is not None:
            self.checked_of_failures.setdefault(batch, {})[violation.rule] = violation.rows_checked
        for value in violation.values:
            if len(rule.samples) < MAX_SAMPLES and value not in rule.samples:
                rule.samples.append(value)
        if batch in self.stages[Stage.TRANSFORM].seen:
            rule.failed_rows += violation.failed_rows
        self._bound_orphans()

    def _finished(self, event: RunEvent) -> None:
        finished = event.payload_as(RunFinished)
        self.status = finished.status if finished is not None else self.status
        self.finished, self.finished_at = True, event.at
        for ledger in self.stages.values():
            ledger.forget()
        self.failures.clear()
        self.checked_of_failures.clear()

    def _record(self, stage: Stage, key: str, figures: Figures) -> None:
        ledger = self.stages[stage]
        ledger.record(key, figures)
        ledger.settle(self.window)

    def _bound_orphans(self) -> None:
        """Keep at most ``ORPHAN_FACTOR * window`` batches' failures, dropping the oldest of batches not
        transformed (tracked transformed batches are at most ``window`` of them)."""
        if self.window is None or len(self.failures) <= ORPHAN_FACTOR * self.window:
            return
        transformed = self.stages[Stage.TRANSFORM].seen
        orphans = [batch for batch in self.failures if batch not in transformed]
        for batch in orphans[: len(self.failures) - ORPHAN_FACTOR * self.window]:
            del self.failures[batch]  # their rows were never checked rows: nothing to settle
            self.checked_of_failures.pop(batch, None)


_HANDLERS: dict[EventKind, Callable[[RunProgress, RunEvent], None]] = {
    EventKind.RUN_ACCEPTED: RunProgress._accepted,
    EventKind.RUN_PLANNED: RunProgress._planned,
    EventKind.SPLIT_EXTRACTED: RunProgress._split_extracted,
    EventKind.STREAM_PROGRESS: RunProgress._stream_progress,
    EventKind.BATCH_TRANSFORMED: RunProgress._transformed,
    EventKind.BATCH_LOADED: RunProgress._loaded,
    EventKind.QUALITY_VIOLATION: RunProgress._violation,
    EventKind.RUN_FINISHED: RunProgress._finished,
}


def fold(run_id: str, events: Iterable[RunEvent]) -> RunProgress:
    """A run's progress from its events (others' are skipped), e.g. as read back from the events topic."""
    return RunProgress(run_id=run_id).apply_all(e for e in events if e.run_id == run_id)
