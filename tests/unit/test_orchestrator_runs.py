"""The orchestrator's run fold: every branch driven with explicit clocks, no Kafka needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.orchestrator.runs import RunBook
from shared.contracts import (
    AgentDecision,
    BatchLoaded,
    ControlAction,
    ErrorInfo,
    EventKind,
    ExtractTask,
    PipelineRequest,
    PipelineResult,
    QualityViolation,
    RunControl,
    RunEvent,
    RunPlanned,
    RunStatus,
    Split,
    SplitKind,
    Stage,
)
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = parse_spec(
    {
        "name": "orders",
        "source": {"type": "csv", "path": "/data/orders.csv"},
        "destination": {"type": "duckdb", "path": "/tmp/x.db", "table": "orders"},
        "run": {"timeout_s": 60, "max_retries": 2},
    }
)


def planner(n: int):
    def plan(spec, payload):
        return [Split(kind=SplitKind.BYTE_RANGE, index=i, count=n, uri="/data/orders.csv") for i in range(n)]

    return plan


def no_row_rules(spec, rows):
    return []


def of(outputs, topic, kind=None):
    return [
        o.value
        for o in outputs
        if o.topic == topic and (kind is None or getattr(o.value, "kind", None) is kind)
    ]


def start(book: RunBook, run_id: str = "r1"):
    req = PipelineRequest(run_id=run_id, request_id="q1", spec=SPEC)
    return book.on_request(req, SPEC, T0)


def ev(kind, stage, at=T0, **kw):
    return RunEvent(run_id="r1", kind=kind, stage=stage, at=at, **kw)


def violation(rule: str, on_fail: OnFail, reason: str) -> QualityViolation:
    return QualityViolation(rule=rule, on_fail=on_fail, reason=reason, failed_rows=2)


def test_request_is_planned_into_one_task_per_split():
    book = RunBook(planner(3), no_row_rules)
    out = start(book)
    tasks = of(out, Topics.TASKS)
    assert [t.task_id for t in tasks] == ["r1:t0", "r1:t1", "r1:t2"]
    assert all(isinstance(t, ExtractTask) and t.spec == SPEC for t in tasks)
    (planned,) = of(out, Topics.EVENTS, EventKind.RUN_PLANNED)
    assert isinstance(planned.payload, RunPlanned) and [s.index for s in planned.payload.splits] == [0, 1, 2]


def test_redelivered_request_starts_no_second_run():
    book = RunBook(planner(2), no_row_rules)
    start(book)
    assert start(book) == []


def _complete_split(book, task, batches, rows):
    out = book.on_event(
        ev(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id=task, batches=batches, rows_out=rows), T0
    )
    for b in range(batches):
        bid = f"{task}:{b}"
        book.on_event(
            ev(
                EventKind.BATCH_TRANSFORMED,
                Stage.TRANSFORM,
                batch_id=bid,
                rows_in=10,
                rows_out=9,
                rows_rejected=1,
            ),
            T0,
        )
        out += book.on_event(ev(EventKind.BATCH_LOADED, Stage.LOAD, batch_id=bid, rows_in=9, rows_out=9), T0)
    return out


def test_run_finalizes_only_after_every_batch_of_every_split_is_loaded_then_completes_once():
    book = RunBook(planner(2), no_row_rules)
    start(book)
    assert of(_complete_split(book, "r1:t0", 2, 20), Topics.CONTROL) == []
    out = _complete_split(book, "r1:t1", 1, 10)
    (control,) = of(out, Topics.CONTROL)
    assert isinstance(control, RunControl) and control.action is ControlAction.FINALIZE
    assert of(out, Topics.RESULTS) == []  # not before the destination confirmed
    out = book.on_event(ev(EventKind.RUN_FINALIZED, Stage.LOAD), T0 + timedelta(seconds=1))
    (result,) = of(out, Topics.RESULTS)
    assert isinstance(result, PipelineResult) and result.status is RunStatus.COMPLETED
    stats = {s.stage: s for s in result.stages}
    assert stats[Stage.EXTRACT].rows_out == 30 and stats[Stage.EXTRACT].batches == 3
    assert (stats[Stage.TRANSFORM].rows_out, stats[Stage.TRANSFORM].rows_rejected) == (27, 3)
    assert stats[Stage.LOAD].rows_out == 27
    # a duplicate finalize ack or late event produces nothing more
    assert book.on_event(ev(EventKind.RUN_FINALIZED, Stage.LOAD), T0) == []


def test_duplicate_loaded_events_do_not_complete_a_run_early():
    book = RunBook(planner(1), no_row_rules)
    start(book)
    book.on_event(ev(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id="r1:t0", batches=2, rows_out=2), T0)
    loaded = ev(EventKind.BATCH_LOADED, Stage.LOAD, batch_id="r1:t0:0", rows_out=1)
    assert of(book.on_event(loaded, T0), Topics.CONTROL) == []
    assert of(book.on_event(loaded, T0), Topics.CONTROL) == []


def test_planning_failure_gives_failed_result_with_reason():
    def broken(spec, payload):
        raise FileNotFoundError("no such file: /data/orders.csv")

    book = RunBook(broken, no_row_rules)
    (result,) = of(start(book), Topics.RESULTS)
    assert result.status is RunStatus.FAILED
    assert result.errors[0].error_class == "FileNotFoundError" and "orders.csv" in result.errors[0].message


def test_terminal_task_failure_fails_run_and_aborts_destination():
    book = RunBook(planner(1), no_row_rules)
    start(book)
    err = ErrorInfo(error_class="SourceReadError", message="bad line 7", transient=False)
    out = book.on_event(ev(EventKind.TASK_FAILED, Stage.EXTRACT, task_id="r1:t0", error=err), T0)
    assert of(out, Topics.CONTROL)[0].action is ControlAction.ABORT
    (result,) = of(out, Topics.RESULTS)
    assert result.status is RunStatus.FAILED and result.errors == [err]


def test_transient_task_failure_is_retried_with_backoff_then_gives_up():
    book = RunBook(planner(1), no_row_rules, retry_backoff_s=2)
    start(book)
    err = ErrorInfo(error_class="SourceUnavailableError", message="refused", transient=True)
    fail = ev(EventKind.TASK_FAILED, Stage.EXTRACT, task_id="r1:t0", error=err)
    assert book.on_event(fail, T0) == []
    assert book.tick(T0 + timedelta(seconds=1)) == []  # backoff not over
    out = book.tick(T0 + timedelta(seconds=2))
    (task,) = of(out, Topics.TASKS)
    assert task.attempt == 1
    (retried,) = of(out, Topics.EVENTS, EventKind.TASK_RETRIED)
    book.on_event(retried, T0)  # the orchestrator consumes its own decision
    book.on_event(fail, T0 + timedelta(seconds=3))
    (task,) = of(book.tick(T0 + timedelta(seconds=7)), Topics.TASKS)
    assert task.attempt == 2
    out = book.on_event(fail, T0 + timedelta(seconds=8))  # max_retries=2 exhausted
    (result,) = of(out, Topics.RESULTS)
    assert result.status is RunStatus.FAILED
    assert len(result.decisions) == 2


def test_run_past_its_timeout_is_timed_out():
    book = RunBook(planner(1), no_row_rules)
    start(book)
    assert of(book.tick(T0 + timedelta(seconds=59)), Topics.RESULTS) == []
    (result,) = of(book.tick(T0 + timedelta(seconds=60)), Topics.RESULTS)
    assert result.status is RunStatus.TIMED_OUT


def test_failing_quality_rule_event_fails_the_run():
    book = RunBook(planner(1), no_row_rules)
    start(book)
    out = book.on_event(
        ev(
            EventKind.QUALITY_VIOLATION,
            Stage.TRANSFORM,
            payload=violation("not_null:id", OnFail.FAIL, "2 rows with null id"),
        ),
        T0,
    )
    (result,) = of(out, Topics.RESULTS)
    assert result.status is RunStatus.FAILED and "null id" in result.errors[0].message
    warn = RunBook(planner(1), no_row_rules)
    start(warn)
    assert (
        warn.on_event(
            ev(EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, payload=violation("ids", OnFail.WARN, "2 rows")),
            T0,
        )
        == []
    )


def test_row_count_rule_is_checked_before_finalize():
    book = RunBook(planner(1), lambda spec, rows: [f"row_count: {rows} rows < min 100"])
    start(book)
    out = _complete_split(book, "r1:t0", 1, 10)
    assert of(out, Topics.CONTROL)[0].action is ControlAction.ABORT
    assert of(out, Topics.RESULTS)[0].status is RunStatus.FAILED


def test_reject_emits_exactly_one_rejected_result():
    book = RunBook(planner(1), no_row_rules)
    reasons = [ErrorInfo(error_class="SpecError", message="Field required", path="source.csv.path")]
    out = book.reject("r9", "q9", "orders", reasons, T0)
    (result,) = of(out, Topics.RESULTS)
    assert result.status is RunStatus.REJECTED and result.errors == reasons
    assert book.reject("r9", "q9", "orders", reasons, T0) == []


def test_finished_event_replayed_after_restart_closes_the_run():
    book = RunBook(planner(1), no_row_rules)
    start(book)
    book.on_event(RunEvent(run_id="r1", kind=EventKind.RUN_FINISHED, stage=Stage.ORCHESTRATE, at=T0), T0)
    assert "r1" not in book.runs and start(book) == []


def test_replay_rebuilds_a_run_from_its_request_and_events_without_planning_again():
    live = RunBook(planner(2), no_row_rules)
    outputs = start(live)
    events = [o.value for o in outputs if o.topic == Topics.EVENTS]
    _complete_split(live, "r1:t0", 1, 10)

    def must_not_plan(spec, payload):
        raise AssertionError("replay must not touch the source")

    rebuilt = RunBook(must_not_plan, no_row_rules)
    assert (
        rebuilt.on_request(PipelineRequest(run_id="r1", request_id="q1", spec=SPEC), SPEC, T0, replaying=True)
        == []
    )
    for event in events:
        rebuilt.on_event(event, T0)
    _complete_split(rebuilt, "r1:t0", 1, 10)
    assert set(rebuilt.runs["r1"].tasks) == {"r1:t0", "r1:t1"}
    # the rebuilt run finishes exactly like the live one would
    out = _complete_split(rebuilt, "r1:t1", 1, 10)
    assert of(out, Topics.CONTROL)[0].action is ControlAction.FINALIZE


# ------------------------------------------------------------------------------------ self-healing
def _healing_book(**policy):  # type: ignore[no-untyped-def]
    from services.orchestrator.healing.healer import Healer
    from services.orchestrator.healing.policy import HealingPolicy

    return RunBook(planner(2), no_row_rules, healer=Healer(HealingPolicy(**policy)))


HEAL_SPEC = parse_spec(
    {
        "name": "heal",
        "source": {"type": "csv", "path": "/data/orders.csv"},
        "quality": [{"rule": "not_null", "columns": ["customer"], "name": "has-customer"}],
        "destination": {"type": "duckdb", "path": "/tmp/x.db", "table": "orders"},
    }
)


def _quality_failure(task: str = "r1:t0"):  # type: ignore[no-untyped-def]
    return ev(
        EventKind.QUALITY_VIOLATION,
        Stage.TRANSFORM,
        task_id=task,
        batch_id=f"{task}:0",
        payload=violation("has-customer", OnFail.FAIL, "3 rows with null customer"),
    )


def test_a_failing_quality_rule_is_healed_by_quarantine_and_the_task_rerun_with_the_new_spec():
    book = _healing_book()
    book.on_request(PipelineRequest(run_id="r1", request_id="q1", spec=HEAL_SPEC), HEAL_SPEC, T0)
    out = book.on_event(_quality_failure(), T0)
    assert of(out, Topics.RESULTS) == []
    (decision,) = of(out, Topics.EVENTS, EventKind.AGENT_DECISION)
    assert isinstance(decision.payload, AgentDecision)
    assert decision.payload.action == "quarantine_bad_rows" and decision.payload.reason
    (task,) = of(out, Topics.TASKS)
    assert task.task_id == "r1:t0" and task.attempt == 1
    assert task.spec.quality[0].on_fail.value == "quarantine"
    # the other split, still extracted with the old spec, fails the same way: re-run, no new attempt
    out = book.on_event(_quality_failure("r1:t1"), T0)
    assert [t.spec.quality[0].on_fail.value for t in of(out, Topics.TASKS)] == ["quarantine"]
    assert book.runs["r1"].heal_attempts == 1
    for t in ("r1:t0", "r1:t1"):
        _complete_split(book, t, 1, 5)
    (result,) = of(book.on_event(ev(EventKind.RUN_FINALIZED, Stage.LOAD), T0), Topics.RESULTS)
    assert result.status is RunStatus.COMPLETED
    assert result.decisions == ["quarantine_bad_rows: data error: quarantine_bad_rows"]


def test_a_remedy_the_policy_does_not_allow_is_never_applied():
    book = _healing_book(allowed=frozenset())
    book.on_request(PipelineRequest(run_id="r1", request_id="q1", spec=HEAL_SPEC), HEAL_SPEC, T0)
    out = book.on_event(_quality_failure(), T0)
    assert of(out, Topics.TASKS) == []
    (result,) = of(out, Topics.RESULTS)
    assert result.status is RunStatus.FAILED
    assert "not allowed" in result.decisions[0]


def test_a_healed_spec_survives_a_restart_through_the_decision_event():
    live = _healing_book()
    req = PipelineRequest(run_id="r1", request_id="q1", spec=HEAL_SPEC)
    outputs = live.on_request(req, HEAL_SPEC, T0) + live.on_event(_quality_failure(), T0)
    rebuilt = _healing_book()
    rebuilt.on_request(req, HEAL_SPEC, T0, replaying=True)
    for o in outputs:
        if o.topic == Topics.EVENTS:
            rebuilt.on_event(o.value, T0)
    run = rebuilt.runs["r1"]
    assert run.spec.quality[0].on_fail.value == "quarantine" and run.heal_attempts == 1
    assert run.tasks["r1:t0"].attempt == 1


# ------------------------------------------------------------------------- redelivered loads (issue 10)
def _loaded(batch: str, rows: int, *, applied: bool, rejected: int = 0, ms: int = 0) -> RunEvent:
    return ev(
        EventKind.BATCH_LOADED,
        Stage.LOAD,
        task_id="r1:t0",
        batch_id=batch,
        rows_in=rows + rejected,
        rows_out=rows,
        rows_rejected=rejected,
        duration_ms=ms,
        payload=BatchLoaded(applied=applied),
    )


@pytest.mark.parametrize("applied_first", [True, False])
def test_a_redelivered_batch_counts_once_in_the_result_with_the_applied_figures(applied_first: bool):
    book = RunBook(planner(1), no_row_rules)
    start(book)
    book.on_event(ev(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id="r1:t0", batches=2, rows_out=20), T0)
    applied = _loaded("r1:t0:0", 8, applied=True, rejected=2, ms=30)
    # what the sink answers for a batch it had applied: the ledger's rows, no deduplicated rows, no time
    redelivered = _loaded("r1:t0:0", 8, applied=False)
    for event in [applied, redelivered] if applied_first else [redelivered, applied]:
        assert of(book.on_event(event, T0), Topics.CONTROL) == [], "one batch of two is loaded"
    out = book.on_event(_loaded("r1:t0:1", 10, applied=True, ms=10), T0)
    assert of(out, Topics.CONTROL)[0].action is ControlAction.FINALIZE
    (result,) = of(book.on_event(ev(EventKind.RUN_FINALIZED, Stage.LOAD), T0), Topics.RESULTS)
    load = next(s for s in result.stages if s.stage is Stage.LOAD)
    assert (load.batches, load.rows_in, load.rows_out, load.rows_rejected, load.duration_ms) == (
        2,
        20,
        18,
        2,
        40,
    )


def test_a_batch_whose_applied_event_was_lost_counts_from_the_redelivery():
    rows_seen: list[int] = []

    def min_rows(spec, rows):  # type: ignore[no-untyped-def]
        rows_seen.append(rows)
        return []

    book = RunBook(planner(1), min_rows)
    start(book)
    book.on_event(ev(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id="r1:t0", batches=1, rows_out=9), T0)
    # load crashed after the sink committed and before its event: only the redelivery reports the batch
    out = book.on_event(_loaded("r1:t0:0", 9, applied=False), T0)
    assert of(out, Topics.CONTROL)[0].action is ControlAction.FINALIZE
    assert rows_seen == [9], "the row-count rules see the rows the sink's ledger reported"
