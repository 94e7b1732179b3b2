"""The orchestrator's timers (``services.orchestrator.timers``): a tick finds due deadlines and retries
from heaps of hints, checked against the run, instead of scanning every open run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.orchestrator import run_state, timers
from services.orchestrator.runs import RunBook
from shared.contracts import AgentDecision, ErrorInfo, EventKind, PipelineRequest, RunStatus, Stage
from shared.kafka.topics import Topics
from tests.unit.test_orchestrator_runs import SPEC, T0, ev, no_row_rules, of, planner, start

pytestmark = pytest.mark.unit


def test_a_tick_reads_no_run_that_is_not_due(monkeypatch: pytest.MonkeyPatch) -> None:
    book = RunBook(planner(1), no_row_rules)
    for i in range(200):
        book.on_request(PipelineRequest(run_id=f"r{i}", request_id="q", spec=SPEC), SPEC, T0)
    reads = []
    deadline = run_state.RunState.deadline
    counted = property(lambda r: reads.append(r) or deadline.fget(r))
    monkeypatch.setattr(run_state.RunState, "deadline", counted)
    assert book.tick(T0 + timedelta(seconds=30)) == []
    assert reads == []  # nothing was due: no run was looked at
    out = book.tick(T0 + timedelta(seconds=60))
    assert len(of(out, Topics.RESULTS)) == 200 and len(reads) == 200


def healed(timeout_s: int) -> AgentDecision:
    spec = SPEC.model_copy(update={"run": SPEC.run.model_copy(update={"timeout_s": timeout_s})})
    return AgentDecision(action="retry", category="c", reason="r", error_class="E", signature="s", spec=spec)


@pytest.mark.parametrize(("timeout_s", "not_yet"), [(30, 29), (120, 60)])
def test_a_healed_spec_moves_the_deadline(timeout_s: int, not_yet: int) -> None:
    """Earlier or later than the first spec's 60 s: the run times out at the healed spec's deadline."""
    book = RunBook(planner(1), no_row_rules)
    start(book)
    book.on_event(ev(EventKind.AGENT_DECISION, Stage.ORCHESTRATE, payload=healed(timeout_s)), T0)
    assert of(book.tick(T0 + timedelta(seconds=not_yet)), Topics.RESULTS) == []
    (result,) = of(book.tick(T0 + timedelta(seconds=timeout_s)), Topics.RESULTS)
    assert result.status is RunStatus.TIMED_OUT


def test_a_retry_replayed_as_issued_is_not_issued_again() -> None:
    book = RunBook(planner(1), no_row_rules, retry_backoff_s=1)
    start(book)
    err = ErrorInfo(error_class="SourceUnavailableError", message="refused", transient=True)
    book.on_event(ev(EventKind.TASK_FAILED, Stage.EXTRACT, task_id="r1:t0", error=err), T0)
    (retried,) = of(book.tick(T0 + timedelta(seconds=1)), Topics.EVENTS, EventKind.TASK_RETRIED)
    book.on_event(retried, T0)
    assert book.tick(T0 + timedelta(seconds=5)) == []


def test_hints_of_finished_runs_do_not_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timers, "COMPACT_FLOOR", 10)
    book = RunBook(planner(1), no_row_rules)
    for i in range(500):
        run_id = f"r{i}"
        book.on_request(PipelineRequest(run_id=run_id, request_id="q", spec=SPEC), SPEC, T0)
        book.on_event(ev(EventKind.RUN_FINISHED, Stage.ORCHESTRATE).model_copy(update={"run_id": run_id}), T0)
        book.tick(T0)
    start(book, "open")
    book.tick(T0)
    assert len(book._deadlines) <= 2 * len(book.runs) + 10
    (result,) = of(book.tick(T0 + timedelta(seconds=60)), Topics.RESULTS)  # the live one is kept
    assert result.run_id == "open"
