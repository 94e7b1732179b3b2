"""Run bookkeeping for the orchestrator, as a pure fold over its input messages.

The orchestrator consumes pipeline requests and run events (co-partitioned by run id) and answers with
tasks, control messages, events and results. Every decision it takes is *also* published as a run event,
which it consumes itself. So its whole state is a function of its input topics: after a restart it replays
the inputs up to its committed offsets with outputs discarded (they were committed in the same Kafka
transaction as those offsets) and continues exactly where it stopped. Nothing here does I/O; the clock is
passed in, which makes every branch unit-testable. Deadlines and due retries are found through heaps of
hints (``services.orchestrator.timers``), each checked against the run when it comes due. A run's state
is ``run_state.RunState``; its figures are the common fold of its events (``shared.progress``), fed here
with every event before its handler runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from services.orchestrator.ports import HealingAdvisor, RowCountCheck, SplitPlanner
from services.orchestrator.run_state import Phase, RunState, TaskProgress
from services.orchestrator.timers import TimerHeap, live_deadlines, live_retries
from shared.contracts import (
    DEFAULT_TENANT,
    AgentDecision,
    ControlAction,
    ErrorInfo,
    EventKind,
    ExtractTask,
    PipelineRequest,
    PipelineResult,
    QualityViolation,
    RunAccepted,
    RunControl,
    RunEvent,
    RunFinished,
    RunPlanned,
    RunStatus,
    SplitExtracted,
    Stage,
    StreamRun,
    StreamState,
    TaskRetried,
)
from shared.kafka.topics import Topics
from shared.processing import Output
from shared.spec.models import OnFail, PipelineSpec


class RunBook:
    """All runs this orchestrator instance owns (the partitions assigned to it)."""

    def __init__(
        self,
        planner: SplitPlanner,
        row_count_check: RowCountCheck,
        *,
        retry_backoff_s: float = 1.0,
        topic: Callable[[str], str] = str,
        healer: HealingAdvisor | None = None,
    ):
        self._plan = planner
        self._healer = healer
        self._topic = topic  # logical topic name -> actual (tests isolate themselves with a suffix)
        self._row_count_check = row_count_check
        self._retry_backoff_s = retry_backoff_s
        self.runs: dict[str, RunState] = {}
        self.finished: set[str] = set()
        self._deadlines: TimerHeap[str] = TimerHeap(lambda: live_deadlines(self.runs.values()))
        self._retries: TimerHeap[tuple[str, str]] = TimerHeap(lambda: live_retries(self.runs.values()))

    def _out(self, topic: str, key: str, value: BaseModel) -> Output:
        return Output(self._topic(topic), key, value)  # type: ignore[arg-type]

    def _event(self, run: RunState | str, kind: EventKind, now: datetime, **kw: Any) -> Output:
        run_id = run if isinstance(run, str) else run.run_id
        event = RunEvent(run_id=run_id, kind=kind, stage=Stage.ORCHESTRATE, at=now, **kw)
        return self._out(Topics.EVENTS, run_id, event)

    # ------------------------------------------------------------------------------------ requests
    def reject(
        self,
        run_id: str,
        request_id: str,
        pipeline: str | None,
        reasons: list[ErrorInfo],
        now: datetime,
        tenant: str = DEFAULT_TENANT,
    ) -> list[Output]:
        """An invalid request: exactly one REJECTED result (the request's tenant's), with every reason."""
        if run_id in self.finished or run_id in self.runs:
            return []
        self.finished.add(run_id)
        result = PipelineResult(
            run_id=run_id,
            request_id=request_id,
            pipeline=pipeline,
            tenant=tenant,
            status=RunStatus.REJECTED,
            started_at=now,
            finished_at=now,
            errors=reasons,
        )
        finished, why = RunFinished(status=RunStatus.REJECTED), reasons[-1] if reasons else None
        return [
            self._out(Topics.RESULTS, run_id, result),
            self._event(run_id, EventKind.RUN_FINISHED, now, payload=finished, error=why),
        ]

    def on_request(
        self,
        request: PipelineRequest,
        spec: PipelineSpec,
        now: datetime,
        *,
        replaying: bool = False,
        parameters: Mapping[str, str] | None = None,
    ) -> list[Output]:
        """Plan a new run. When ``replaying`` (state rebuild after a restart) nothing is planned again: the
        run's own RUN_PLANNED event, replayed next, carries the splits it was given the first time.
        ``parameters``: what the spec's placeholders were filled with (default: the request's)."""
        run_id = request.run_id
        if run_id in self.runs or run_id in self.finished:
            return []  # a redelivered request starts no second run
        given = dict(request.parameters if parameters is None else parameters)
        run = RunState(run_id, request.request_id, spec, now, now, request.payload, request.tenant, given)
        self.runs[run_id] = run
        if not spec.continuous:
            self._deadlines.push(run.deadline, run_id)
        if replaying:
            return []
        accepted = RunAccepted(
            pipeline=spec.name,
            stuck_after_s=spec.run.stuck_after_s,
            continuous=spec.continuous,
            # from a definition, an intent or a watermark: keep it for replay
            spec=spec if spec != request.spec else None,
            tenant=request.tenant,  # readers of events (the monitor, the gateway) learn whose run it is
            parameters=given,  # what `aoetl status` shows, and what replay restores
        )
        out = [self._event(run, EventKind.RUN_ACCEPTED, now, payload=accepted)]
        if spec.continuous:
            # No splits and no end: the extract instances read the topic while the stream is RUNNING.
            return [*out, self._stream(run, now)]
        try:
            splits = list(self._plan(spec, request.payload))
        except Exception as exc:  # any planning failure is this run's failure, never the service's
            run.errors.append(ErrorInfo.from_exception(exc))
            return out + self._finish(run, RunStatus.FAILED, now, abort=False)
        for split in splits:
            run.tasks[_task_id(run_id, split.index)] = TaskProgress(split)
        out.append(self._event(run, EventKind.RUN_PLANNED, now, payload=RunPlanned(splits=splits)))
        out.extend(self._task(run, task_id, now) for task_id in run.tasks)
        return out

    def on_stop(self, request: PipelineRequest, now: datetime) -> list[Output]:
        """Stop a run in progress: a continuous run's readers commit what they read and leave (a later run
        of the pipeline resumes from there); a one-shot run is aborted. Either ends CANCELLED."""
        run = self.runs.get(request.run_id)
        if run is None or run.phase is not Phase.RUNNING:
            return []  # unknown here, already finishing or finished: nothing to stop
        run.decisions.append(f"stopped by {request.requested_by}")
        return self._finish(run, RunStatus.CANCELLED, now)

    def continuous_run_of(self, pipeline: str) -> str | None:
        """The run id of this instance's running continuous run of ``pipeline``, if any."""
        for run in self.runs.values():
            if run.continuous and run.spec.name == pipeline and run.phase is not Phase.FINISHED:
                return run.run_id
        return None

    def _stream(self, run: RunState, now: datetime, state: StreamState = StreamState.RUNNING) -> Output:
        stream = StreamRun(pipeline=run.spec.name, run_id=run.run_id, state=state, spec=run.spec, at=now)
        return self._out(Topics.STREAMS, run.spec.name, stream)

    # -------------------------------------------------------------------------------------- events
    def on_event(self, ev: RunEvent, now: datetime) -> list[Output]:
        if ev.kind is EventKind.RUN_FINISHED:
            self.runs.pop(ev.run_id, None)
            self.finished.add(ev.run_id)
            return []
        run = self.runs.get(ev.run_id)
        if run is None or run.phase is Phase.FINISHED:
            return []  # late or foreign event: the run is over
        if ev.stage is not Stage.ORCHESTRATE:
            run.last_progress = max(run.last_progress, ev.at)
        run.progress.apply(ev)  # the figures: counted once per batch, read by the handlers below
        handler = _EVENT_HANDLERS.get(ev.kind)
        return handler(self, run, ev, now) if handler else []

    def _planned(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        planned = ev.payload_as(RunPlanned)
        if not run.tasks and planned is not None:  # replay: restore the splits planned the first time
            for split in planned.splits:
                run.tasks[_task_id(run.run_id, split.index)] = TaskProgress(split)
        return []

    def _split_extracted(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        task = run.tasks.get(ev.task_id or "")
        if task is None or task.extracted:
            return []
        task.extracted = True
        extracted = ev.payload_as(SplitExtracted)
        if extracted is not None:
            task.cursor_max, task.cursor_kind = extracted.cursor_max, extracted.cursor_kind
        return self._maybe_finalize(run, now)

    def _batch_loaded(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        return [] if run.continuous else self._maybe_finalize(run, now)

    def _failed(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        error = ev.error or ErrorInfo(error_class="UnknownError", message=f"{ev.kind} without error details")
        task = run.tasks.get(ev.task_id or "")
        if (
            ev.kind is EventKind.TASK_FAILED
            and error.transient
            and task is not None
            and task.attempt < run.spec.run.max_retries
        ):
            # Back off exponentially; the retry itself is issued by tick() so that it is also an event.
            delay = self._retry_backoff_s * (2**task.attempt)
            self._retry_at(run, ev.task_id or "", now + timedelta(seconds=delay))
            return []
        return self._heal_or_fail(run, error, ev.task_id, now)

    def _quality(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        violation = ev.payload_as(QualityViolation)
        if violation is not None and violation.on_fail is OnFail.FAIL:
            error = ErrorInfo(error_class="QualityRuleFailed", message=violation.reason, path=violation.rule)
            return self._heal_or_fail(run, error, ev.task_id, now)
        return []

    # ------------------------------------------------------------------------------- self-healing
    def _heal_or_fail(
        self, run: RunState, error: ErrorInfo, task_id: str | None, now: datetime
    ) -> list[Output]:
        """Ask the healer (if any) for a remedy within its policy; every decision is published as an
        AGENT_DECISION event with its reason, and shows in the result."""
        if self._healer is None or task_id not in run.tasks:
            run.errors.append(error)
            return self._finish(run, RunStatus.FAILED, now)
        assert task_id is not None
        signature = f"{error.error_class}:{error.path or error.message.split(':', 1)[0]}"
        if signature in run.healed:
            # The same error from a batch that still carried the spec before the remedy: run its task
            # again with the healed spec; no new healing attempt is spent on it.
            return self._reissue(run, task_id, now, f"re-run with the healed spec ({signature})")
        decision = self._healer(run.spec, error, run.heal_attempts)
        decided = AgentDecision(
            action=decision.action,
            category=decision.category,
            reason=decision.reason,
            error_class=error.error_class,
            signature=signature,
            spec=decision.spec,
        )
        out = [self._event(run, EventKind.AGENT_DECISION, now, task_id=task_id, payload=decided)]
        self._apply_decision(run, decided)
        if not decision.heals:
            run.errors.append(error)
            return out + self._finish(run, RunStatus.FAILED, now)
        if decision.spec is None and decision.delay_s > 0:
            self._retry_at(run, task_id, now + timedelta(seconds=decision.delay_s))
            return out
        return out + self._reissue(run, task_id, now, decision.reason)

    def _agent_decision(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        decision = ev.payload_as(AgentDecision)
        if decision is not None:
            self._apply_decision(run, decision)
        return []

    def _apply_decision(self, run: RunState, decision: AgentDecision) -> None:
        run.apply_decision(decision)
        if decision.spec is not None and not run.continuous:  # its timeout may have changed
            self._deadlines.push(run.deadline, run.run_id)

    def _retry_at(self, run: RunState, task_id: str, due: datetime) -> None:
        run.tasks[task_id].retry_due = due
        self._retries.push(due, (run.run_id, task_id))

    def _reissue(self, run: RunState, task_id: str, now: datetime, reason: str) -> list[Output]:
        task = run.tasks[task_id]
        task.attempt += 1
        task.retry_due = None
        retried = TaskRetried(attempt=task.attempt, reason=reason)
        return [
            self._event(run, EventKind.TASK_RETRIED, now, task_id=task_id, payload=retried),
            self._task(run, task_id, now),
        ]

    def _retried(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        task = run.tasks.get(ev.task_id or "")
        if task is not None:
            retried = ev.payload_as(TaskRetried)
            task.attempt = retried.attempt if retried is not None else task.attempt + 1
            task.retry_due = None
        return []

    def _finalized(self, run: RunState, ev: RunEvent, now: datetime) -> list[Output]:
        if run.phase is not Phase.FINALIZING:
            return []
        if ev.error is not None:
            run.errors.append(ev.error)
            return self._result(run, RunStatus.FAILED, now)
        return self._result(run, run.pending_status or RunStatus.COMPLETED, now)

    # ------------------------------------------------------------------------------------- timers
    def tick(self, now: datetime) -> list[Output]:
        """Time out the runs past their deadline, then issue the retries that are due."""
        out: list[Output] = []
        for run_id in self._deadlines.pop_due(now):
            run = self.runs.get(run_id)
            if run is None or run.phase is not Phase.RUNNING or run.continuous:
                continue  # finished or finishing: its deadline no longer counts
            if now < run.deadline:  # moved later (a healed spec): due then
                self._deadlines.push(run.deadline, run_id)
                continue
            run.errors.append(
                ErrorInfo(error_class="RunTimeout", message=f"run exceeded {run.spec.run.timeout_s}s")
            )
            out.extend(self._finish(run, RunStatus.TIMED_OUT, now))
        for run_id, task_id in self._retries.pop_due(now):
            run = self.runs.get(run_id)
            task = run.tasks.get(task_id) if run is not None else None
            if run is None or task is None or task.retry_due is None:
                continue  # the run ended, or the retry was issued (or replayed) already
            if now < task.retry_due:  # set again since, for later: due then
                self._retries.push(task.retry_due, (run_id, task_id))
                continue
            reason = f"transient failure; retry {task.attempt + 1}/{run.spec.run.max_retries}"
            run.decisions.append(f"{task_id}: {reason}")
            out.extend(self._reissue(run, task_id, now, reason))
        self._deadlines.compact(len(self.runs))
        self._retries.compact(len(self.runs))
        return out

    # ----------------------------------------------------------------------------------- internals
    def _task(self, run: RunState, task_id: str, now: datetime) -> Output:
        task = run.tasks[task_id]
        msg = ExtractTask(
            run_id=run.run_id,
            task_id=task_id,
            attempt=task.attempt,
            split=task.split,
            spec=run.spec,
            payload=run.payload,
            created_at=now,
        )
        return self._out(Topics.TASKS, run.run_id, msg)

    def _maybe_finalize(self, run: RunState, now: datetime) -> list[Output]:
        if run.phase is not Phase.RUNNING or not run.all_loaded():
            return []
        failures = self._row_count_check(run.spec, run.loaded_rows())
        if failures:
            run.errors.extend(ErrorInfo(error_class="QualityRuleFailed", message=m) for m in failures)
            return self._finish(run, RunStatus.FAILED, now)
        run.phase = Phase.FINALIZING
        run.pending_status = RunStatus.COMPLETED
        control = RunControl(run_id=run.run_id, action=ControlAction.FINALIZE, spec=run.spec, at=now)
        return [self._out(Topics.CONTROL, run.run_id, control)]

    def _finish(self, run: RunState, status: RunStatus, now: datetime, *, abort: bool = True) -> list[Output]:
        """End a run that did not succeed: tell load to drop staged data, report at once."""
        out: list[Output] = []
        if abort and not run.continuous:  # a continuous run stages nothing (append or merge, no end)
            control = RunControl(run_id=run.run_id, action=ControlAction.ABORT, spec=run.spec, at=now)
            out.append(self._out(Topics.CONTROL, run.run_id, control))
        return out + self._result(run, status, now)

    def _result(self, run: RunState, status: RunStatus, now: datetime) -> list[Output]:
        run.phase = Phase.FINISHED
        self.runs.pop(run.run_id, None)
        self.finished.add(run.run_id)
        # the end event says why a run did not complete, for readers of events (the run history)
        why = run.errors[-1] if run.errors and status is not RunStatus.COMPLETED else None
        out = [
            self._out(Topics.RESULTS, run.run_id, run.result(status, now)),
            self._event(run, EventKind.RUN_FINISHED, now, payload=RunFinished(status=status), error=why),
        ]
        if run.continuous:  # its readers stop, in the same transaction as the result
            out.append(self._stream(run, now, StreamState.STOPPED))
        watermark = run.watermark(now) if status is RunStatus.COMPLETED else None
        if watermark is not None:  # in the same transaction as the result: both or neither
            out.append(self._out(Topics.WATERMARKS, watermark.pipeline, watermark))
        return out


_EVENT_HANDLERS: dict[EventKind, Callable[[RunBook, RunState, RunEvent, datetime], list[Output]]] = {
    EventKind.RUN_PLANNED: RunBook._planned,
    EventKind.SPLIT_EXTRACTED: RunBook._split_extracted,
    EventKind.BATCH_LOADED: RunBook._batch_loaded,
    EventKind.TASK_FAILED: RunBook._failed,
    EventKind.BATCH_FAILED: RunBook._failed,
    EventKind.QUALITY_VIOLATION: RunBook._quality,
    EventKind.TASK_RETRIED: RunBook._retried,
    EventKind.RUN_FINALIZED: RunBook._finalized,
    EventKind.AGENT_DECISION: RunBook._agent_decision,
}


def _task_id(run_id: str, index: int) -> str:
    return f"{run_id}:t{index}"
