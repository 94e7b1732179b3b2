"""What the orchestrator knows about one run it owns: its decision state (tasks, attempts, retries,
healing, phase) and its progress.

The figures (rows and batches per stage, what each split produced, what is loaded) are not counted
here: they come from the common fold of the run's events (``shared.progress``), the same one the
monitor, the gateway and the CLI read, so the result cannot disagree with what they show. A one-shot
run's fold tracks every batch (``window=None``): whether everything is loaded decides the finalize,
which must be exact however late a duplicate arrives; a continuous run's fold is bounded, it never ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from services.orchestrator.outcomes import quality_outcomes, write_outcomes
from shared.contracts import (
    DEFAULT_TENANT,
    AgentDecision,
    CursorKind,
    ErrorInfo,
    PipelineResult,
    PipelineWatermark,
    RunStatus,
    Split,
    Stage,
)
from shared.progress import MAX_TRACKED_BATCHES, RunProgress
from shared.spec.models import PipelineSpec, PostgresSource


class Phase(StrEnum):
    RUNNING = "RUNNING"
    FINALIZING = "FINALIZING"  # FINALIZE sent to load; waiting for RUN_FINALIZED
    FINISHED = "FINISHED"


@dataclass
class TaskProgress:
    split: Split
    attempt: int = 0
    retry_due: datetime | None = None
    extracted: bool = False  # its first SPLIT_EXTRACTED is in: the one whose cursor counts
    cursor_max: str | None = None  # incremental sources: the greatest cursor value the split read
    cursor_kind: CursorKind = CursorKind.TEXT


@dataclass
class RunState:
    run_id: str
    request_id: str
    spec: PipelineSpec
    started_at: datetime
    last_progress: datetime
    payload: bytes | None = None
    tenant: str = DEFAULT_TENANT  # the request's: its result is that tenant's
    parameters: dict[str, str] = field(default_factory=dict)  # what its placeholders were filled with
    phase: Phase = Phase.RUNNING
    tasks: dict[str, TaskProgress] = field(default_factory=dict)
    errors: list[ErrorInfo] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    pending_status: RunStatus | None = None  # the status to report once finalize/abort is acknowledged
    heal_attempts: int = 0
    healed: set[str] = field(default_factory=set)  # signatures of errors a remedy already addressed
    applied_decisions: set[str] = field(default_factory=set)
    progress: RunProgress = field(init=False)

    def __post_init__(self) -> None:
        window = MAX_TRACKED_BATCHES if self.spec.continuous else None
        self.progress = RunProgress(run_id=self.run_id, window=window)

    @property
    def continuous(self) -> bool:
        return self.spec.continuous

    @property
    def deadline(self) -> datetime:
        return self.started_at + timedelta(seconds=self.spec.run.timeout_s)

    def all_loaded(self) -> bool:
        """Every task's split is extracted, and as many distinct batches are loaded as they produced."""
        if not self.tasks:
            return False
        expected = 0
        for task_id in self.tasks:
            batches = self.progress.split_batches(task_id)
            if batches is None:
                return False
            expected += batches
        return self.progress.stage(Stage.LOAD).counted >= expected

    def loaded_rows(self) -> int:
        return self.progress.stage(Stage.LOAD).total.rows_out

    def apply_decision(self, decision: AgentDecision) -> None:
        """Idempotent: applied live when decided, and again when the orchestrator reads its own event
        (or replays it after a restart)."""
        if decision.decision_id in self.applied_decisions:
            return
        self.applied_decisions.add(decision.decision_id)
        self.decisions.append(f"{decision.action}: {decision.reason}")
        if decision.action != "fail":
            self.heal_attempts += 1
            self.healed.add(decision.signature)
        if decision.spec is not None:
            self.spec = decision.spec

    def result(self, status: RunStatus, now: datetime) -> PipelineResult:
        """The run's one result: its figures, quality outcomes and what was written are the fold's."""
        return PipelineResult(
            run_id=self.run_id,
            request_id=self.request_id,
            pipeline=self.spec.name,
            tenant=self.tenant,
            status=status,
            started_at=self.started_at,
            finished_at=now,
            stages=self.progress.stage_stats(),
            errors=self.errors,
            decisions=self.decisions,
            quality=quality_outcomes(self.spec, self.progress),
            written=write_outcomes(self.spec, self.progress, status),
            parameters=self.parameters,
        )

    def watermark(self, now: datetime) -> PipelineWatermark | None:
        """For an incremental source: the greatest cursor value over all splits (None if nothing new)."""
        source = self.spec.source
        values = [(t.cursor_max, t.cursor_kind) for t in self.tasks.values() if t.cursor_max is not None]
        if not isinstance(source, PostgresSource) or source.cursor_column is None or not values:
            return None
        numeric = all(kind is CursorKind.NUMBER for _, kind in values)
        # ISO dates/timestamps of one column order correctly as text; numbers must compare as numbers
        top = max((v for v, _ in values), key=(lambda v: Decimal(v)) if numeric else None)
        return PipelineWatermark(
            pipeline=self.spec.name,
            cursor_column=source.cursor_column,
            value=top,
            run_id=self.run_id,
            updated_at=now,
        )
