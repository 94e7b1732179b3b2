"""The gateway's in-memory views, all rebuilt from Kafka at start-up and kept current by following topics
(there is no side database): acknowledged run ids (replay detection), registered definitions, and a
bounded status view of recent runs (their figures from the common fold of run events, ``shared.progress``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.contracts import (
    AgentDecision,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    RunAccepted,
    RunEvent,
    RunFinished,
    Stage,
    StreamProgress,
)
from shared.progress import RunProgress

SUBMITTED = "SUBMITTED"
RUNNING = "RUNNING"
_EPOCH = datetime.fromtimestamp(0, UTC)
MAX_NOTES = 50  # agent decisions and errors kept per run while it is in progress (its result has them all)


class RunLedger:
    """Run ids whose ``PipelineRequest`` Kafka has acknowledged, bounded LRU.

    Filled by our own acknowledged sends *and* by following the requests topic (from ``history_s`` back at
    start-up, then live), so a replay is recognised after a restart and across gateway replicas. Replays
    racing the first delivery wait for its outcome instead of publishing a second request.
    """

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.waiting = 0  # callers parked behind another attempt at the same run id

    def __len__(self) -> int:
        return len(self._acked)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._acked

    def record(self, run_id: str) -> None:
        self._acked[run_id] = None
        self._acked.move_to_end(run_id)
        while len(self._acked) > self._capacity:
            self._acked.popitem(last=False)

    async def publish_once(self, run_id: str, publish: Callable[[], Awaitable[None]]) -> bool:
        """Run ``publish`` unless ``run_id`` is already acknowledged; True if it was published now.
        ``publish`` raising leaves the id unacknowledged (the sender's retry will try again)."""
        while True:
            if run_id in self._acked:
                self._acked.move_to_end(run_id)
                return False
            pending = self._inflight.get(run_id)
            if pending is None:
                break
            self.waiting += 1
            try:
                await asyncio.shield(pending)  # another attempt at this run id: wait for its outcome
            finally:
                self.waiting -= 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[run_id] = done
        try:
            await publish()
            self.record(run_id)
            return True
        finally:
            del self._inflight[run_id]
            done.set_result(None)


class DefinitionCatalog:
    """The compacted definitions topic as a dict: the last value per name, a tombstone deletes."""

    def __init__(self) -> None:
        self._by_name: dict[str, PipelineDefinition] = {}

    def apply(self, name: str, definition: PipelineDefinition | None) -> None:
        if definition is None:
            self._by_name.pop(name, None)
        else:
            self._by_name[name] = definition

    def get(self, name: str) -> PipelineDefinition | None:
        return self._by_name.get(name)

    def clear(self) -> None:
        self._by_name.clear()

    def all(self) -> list[PipelineDefinition]:
        return [self._by_name[name] for name in sorted(self._by_name)]

    def of_tenant(self, tenant: str) -> list[PipelineDefinition]:
        return [d for d in self.all() if d.tenant == tenant]

    def next_version(self, name: str) -> int:
        current = self._by_name.get(name)
        return 1 if current is None else current.version + 1


class StageProgress(BaseModel):
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    batches: int = 0
    duration_ms: int = 0


class RunStatusView(BaseModel):
    """What ``GET /runs/{run_id}`` answers: the request, its progress folded from its events, its result."""

    run_id: str
    tenant: str | None = Field(None, description="whose run it is; None until its request has been read")
    status: str = Field(description="SUBMITTED, RUNNING, or the final RunStatus")
    pipeline: str | None = None
    request_id: str | None = None
    submitted_at: datetime | None = None
    trigger: dict[str, Any] | None = None
    events: int = 0
    last_event: str | None = None
    last_event_at: datetime | None = None
    stages: dict[str, StageProgress] = Field(
        default_factory=dict, description="per stage, every batch counted once (see shared.progress)"
    )
    splits_planned: int | None = None
    splits_extracted: int = 0
    bytes_loaded: int | None = Field(
        None, description="bytes the destination took, every batch counted once; None if a sink cannot say"
    )
    result: dict[str, Any] | None = Field(None, description="the PipelineResult, once published")


@dataclass
class RunNotes:
    """What the events of a run say beyond the figures of the fold, for the console while it runs: the
    latest backlog each partition of a continuous run reported (STREAM_PROGRESS ``lag``), and its newest
    agent decisions and errors (at most ``MAX_NOTES`` each; the result carries every one)."""

    lag: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> records not read yet
    lag_at: datetime | None = None
    decisions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def note(self, event: RunEvent) -> None:
        stream = event.payload_as(StreamProgress)
        if stream is not None and stream.lag is not None and stream.topic is not None:
            self.lag[f"{stream.topic}[{stream.partition}]"] = stream.lag
            self.lag_at = event.at
        decision = event.payload_as(AgentDecision)
        if decision is not None:
            _bounded(self.decisions, f"{decision.action} ({decision.category}): {decision.reason}")
        if event.error is not None:
            _bounded(self.errors, f"{event.kind.value}: {event.error.error_class}: {event.error.message}")


def _bounded(notes: list[str], note: str) -> None:
    notes.append(note)
    del notes[:-MAX_NOTES]


@dataclass
class _Run:
    view: RunStatusView
    progress: RunProgress
    notes: RunNotes = field(default_factory=RunNotes)
    sequence: int = 0  # RunView.sequence when it last changed


class RunView:
    """Recent runs folded from the requests, events and results topics; bounded (oldest touched first out).
    A run's figures are the common fold of its events (``shared.progress``): the same the orchestrator's
    result and the CLI report, a redelivered batch counted once; bounded while the run is in progress,
    a few numbers once it finished.

    Every change of a run moves it to the end and numbers it (``sequence``), so what changed since a
    number is the tail of the order (``changed_since``: the console's live updates, without a scan)."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self.sequence = 0
        # callers waiting for a run's tenant to be known (``tenant_within``), woken when it is
        self._awaiting: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> RunStatusView | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        return run.view.model_copy(update=_figures(run.progress))

    def tenant_of(self, run_id: str) -> str | None:
        """Whose run it is, if known: its request's tenant (or its RUN_ACCEPTED's, RunEvent v6)."""
        run = self._runs.get(run_id)
        return run.view.tenant if run is not None else None

    async def tenant_within(self, run_id: str, timeout: float) -> str | None:
        """``tenant_of``, waiting up to ``timeout`` seconds for the run's request (or its RUN_ACCEPTED) to be
        read: the topics are followed side by side, so a run's result can be read before its request."""
        tenant = self.tenant_of(run_id)
        if tenant is not None or timeout <= 0:
            return tenant
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._awaiting.setdefault(run_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            waiting = self._awaiting.get(run_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self._awaiting.pop(run_id, None)
        return self.tenant_of(run_id)

    def _known(self, run_id: str) -> None:
        for waiter in self._awaiting.pop(run_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def recent_page(
        self, tenant: str, *, pipeline: str | None, status: str | None, offset: int, limit: int
    ) -> tuple[int, list[RunStatusView]]:
        """The tenant's runs kept here, most recently submitted first (a run known only from events, by its
        latest event), filtered by pipeline and status: (how many match, the page ``offset:offset+limit``).
        Only the page's figures are folded: a page of 10,000 runs costs a sort of their views, not 10,000
        copies."""
        views = [
            run.view
            for run in self._runs.values()
            if run.view.tenant == tenant
            and (pipeline is None or run.view.pipeline == pipeline)
            and (status is None or run.view.status == status)
        ]
        views.sort(key=_newest_first, reverse=True)
        return len(views), [self.get(v.run_id) or v for v in views[offset : offset + limit]]

    def changed_since(self, sequence: int, tenant: str) -> list[str]:
        """The tenant's runs changed after ``sequence`` (as ``self.sequence`` was then), newest first."""
        changed = []
        for run_id in reversed(self._runs):
            run = self._runs[run_id]
            if run.sequence <= sequence:
                break
            if run.view.tenant == tenant:
                changed.append(run_id)
        return changed

    def progress_of(self, run_id: str) -> RunProgress | None:
        """The run's fold itself, to read (its rules' totals while it runs); never to change."""
        run = self._runs.get(run_id)
        return run.progress if run is not None else None

    def notes_of(self, run_id: str) -> RunNotes | None:
        run = self._runs.get(run_id)
        return run.notes if run is not None else None

    def continuous(self, tenant: str) -> list[RunStatusView]:
        """The tenant's continuous runs kept here, newest first."""
        views = [
            run.view for run in self._runs.values() if run.view.tenant == tenant and run.progress.continuous
        ]
        views.sort(key=_newest_first, reverse=True)
        return [self.get(v.run_id) or v for v in views]

    def _entry(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run(
                RunStatusView(run_id=run_id, status=SUBMITTED), RunProgress(run_id=run_id)
            )
        self._runs.move_to_end(run_id)
        self.sequence += 1
        run.sequence = self.sequence
        while len(self._runs) > self._capacity:
            self._runs.popitem(last=False)
        return run

    def on_request(self, request: PipelineRequest) -> None:
        view = self._entry(request.run_id).view
        view.request_id = request.request_id
        view.tenant = request.tenant
        view.submitted_at = request.submitted_at
        view.pipeline = view.pipeline or (request.spec.name if request.spec else request.definition_name)
        view.trigger = request.trigger.model_dump(mode="json")
        self._known(request.run_id)

    def on_event(self, event: RunEvent) -> None:
        run = self._entry(event.run_id)
        view = run.view
        view.events += 1
        view.last_event = event.kind.value
        view.last_event_at = event.at
        run.progress.apply(event)
        run.notes.note(event)
        accepted = event.payload_as(RunAccepted)
        if view.tenant is None and accepted is not None and accepted.tenant is not None:
            view.tenant = accepted.tenant  # the request itself is older than what was read, or not read yet
            self._known(event.run_id)
        if view.result is not None:
            return  # the result is final
        finished = event.payload_as(RunFinished)
        if finished is not None:
            view.status = finished.status.value
        elif view.status in (SUBMITTED, RUNNING):
            view.status = RUNNING

    def on_result(self, result: PipelineResult) -> None:
        view = self._entry(result.run_id).view
        view.status = result.status.value
        view.pipeline = result.pipeline or view.pipeline
        view.request_id = view.request_id or result.request_id
        view.result = result.model_dump(mode="json")


def _newest_first(view: RunStatusView) -> tuple[datetime, str]:
    return (view.submitted_at or view.last_event_at or _EPOCH, view.run_id)


def _figures(progress: RunProgress) -> dict[str, Any]:
    stages = {
        s.stage.value: StageProgress(
            rows_in=s.rows_in,
            rows_out=s.rows_out,
            rows_rejected=s.rows_rejected,
            batches=s.batches,
            duration_ms=s.duration_ms,
        )
        for s in progress.stage_stats()
    }
    return {
        "stages": stages,
        "splits_planned": progress.splits_planned,
        "splits_extracted": progress.splits_extracted,
        "bytes_loaded": progress.stage(Stage.LOAD).total.bytes,
    }
