"""Continuous runs and stop requests in the orchestrator's run fold (no Kafka, explicit clocks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.orchestrator.runs import RunBook
from shared.contracts import (
    BatchLoaded,
    ControlAction,
    EventKind,
    PipelineRequest,
    PipelineResult,
    QualityViolation,
    RequestAction,
    RunAccepted,
    RunEvent,
    RunStatus,
    Split,
    SplitKind,
    Stage,
    StreamProgress,
    StreamRun,
    StreamState,
)
from shared.kafka.topics import Topics
from shared.spec import SpecError, parse_spec
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STREAM = parse_spec(
    {
        "name": "clicks",
        "source": {"type": "kafka", "topic": "clicks.raw"},
        "destination": {"type": "postgres", "table": "clicks"},
        "run": {"timeout_s": 60},
    }
)
ONE_SHOT = parse_spec(
    {
        "name": "orders",
        "source": {"type": "csv", "path": "/data/orders.csv"},
        "destination": {"type": "duckdb", "path": "/tmp/x.db", "table": "orders"},
    }
)


def never_planned(spec, payload):
    raise AssertionError("a continuous run is never planned into splits")


def one_split(spec, payload):
    return [Split(kind=SplitKind.WHOLE, index=0, count=1)]


def of(outputs, topic, kind=None):
    return [
        o.value
        for o in outputs
        if o.topic == topic and (kind is None or getattr(o.value, "kind", None) is kind)
    ]


def ev(kind, stage, run_id="s1", **kw):
    return RunEvent(run_id=run_id, kind=kind, stage=stage, at=T0, **kw)


def stop_request(run_id="s1"):
    return PipelineRequest(run_id=run_id, action=RequestAction.STOP, requested_by="alice")


def test_a_continuous_run_starts_its_stream_and_plans_nothing():
    book = RunBook(never_planned, lambda spec, rows: [])
    out = book.on_request(PipelineRequest(run_id="s1", spec=STREAM), STREAM, T0)
    (accepted,) = of(out, Topics.EVENTS, EventKind.RUN_ACCEPTED)
    assert isinstance(accepted.payload, RunAccepted) and accepted.payload.continuous
    assert (accepted.payload.pipeline, accepted.payload.spec) == ("clicks", None)  # the request's own spec
    (stream,) = of(out, Topics.STREAMS)
    assert isinstance(stream, StreamRun)
    assert (stream.pipeline, stream.run_id, stream.state) == ("clicks", "s1", StreamState.RUNNING)
    assert [o.key for o in out if o.topic == Topics.STREAMS] == ["clicks"]
    assert not of(out, Topics.TASKS)
    assert book.continuous_run_of("clicks") == "s1"


def test_a_continuous_run_has_no_deadline_and_never_finalizes():
    book = RunBook(never_planned, lambda spec, rows: [])
    book.on_request(PipelineRequest(run_id="s1", spec=STREAM), STREAM, T0)
    for seq in range(3):
        book.on_event(ev(EventKind.STREAM_PROGRESS, Stage.EXTRACT, batch_id=f"b{seq}", rows_out=10), T0)
        book.on_event(ev(EventKind.BATCH_TRANSFORMED, Stage.TRANSFORM, batch_id=f"b{seq}", rows_in=10), T0)
        out = book.on_event(
            ev(
                EventKind.BATCH_LOADED,
                Stage.LOAD,
                batch_id=f"b{seq}",
                rows_out=10,
                payload=BatchLoaded(applied=True),
            ),
            T0,
        )
        assert out == []
    assert book.tick(T0 + timedelta(hours=5)) == []
    assert "s1" in book.runs


def test_stop_of_a_continuous_run_reports_exact_totals_and_stops_the_stream():
    book = RunBook(never_planned, lambda spec, rows: [])
    book.on_request(PipelineRequest(run_id="s1", spec=STREAM), STREAM, T0)
    book.on_event(ev(EventKind.STREAM_PROGRESS, Stage.EXTRACT, payload=StreamProgress(heartbeat=True)), T0)
    book.on_event(ev(EventKind.STREAM_PROGRESS, Stage.EXTRACT, batch_id="b0", rows_out=7), T0)
    loaded = ev(
        EventKind.BATCH_LOADED, Stage.LOAD, batch_id="b0", rows_out=7, payload=BatchLoaded(applied=True)
    )
    book.on_event(loaded, T0)
    # load is at-least-once: a redelivered batch says applied=false and must not count twice
    book.on_event(loaded.model_copy(update={"payload": BatchLoaded(applied=False)}), T0)
    out = book.on_stop(stop_request(), T0)
    (result,) = of(out, Topics.RESULTS)
    assert isinstance(result, PipelineResult) and result.status is RunStatus.CANCELLED
    stats = {s.stage: s for s in result.stages}
    assert (stats[Stage.EXTRACT].rows_out, stats[Stage.EXTRACT].batches) == (7, 1)
    assert (stats[Stage.LOAD].rows_out, stats[Stage.LOAD].batches) == (7, 1)
    assert result.decisions == ["stopped by alice"]
    (stream,) = of(out, Topics.STREAMS)
    assert stream.state is StreamState.STOPPED and stream.run_id == "s1"
    assert not of(out, Topics.CONTROL), "a continuous run stages nothing to abort"
    assert book.on_stop(stop_request(), T0) == [], "a second stop finds nothing to stop"
    assert book.continuous_run_of("clicks") is None


def test_a_failing_continuous_run_stops_its_stream_with_the_result():
    book = RunBook(never_planned, lambda spec, rows: [])
    book.on_request(PipelineRequest(run_id="s1", spec=STREAM), STREAM, T0)
    out = book.on_event(
        ev(
            EventKind.QUALITY_VIOLATION,
            Stage.TRANSFORM,
            payload=QualityViolation(rule="r", on_fail=OnFail.FAIL, reason="bad", failed_rows=1),
        ),
        T0,
    )
    assert of(out, Topics.RESULTS)[0].status is RunStatus.FAILED
    assert of(out, Topics.STREAMS)[0].state is StreamState.STOPPED


def test_stop_of_a_one_shot_run_aborts_it():
    book = RunBook(one_split, lambda spec, rows: [])
    book.on_request(PipelineRequest(run_id="r1", spec=ONE_SHOT), ONE_SHOT, T0)
    out = book.on_stop(stop_request("r1"), T0)
    (control,) = of(out, Topics.CONTROL)
    assert control.action is ControlAction.ABORT
    assert of(out, Topics.RESULTS)[0].status is RunStatus.CANCELLED
    assert not of(out, Topics.STREAMS)


def test_stop_of_an_unknown_run_does_nothing():
    assert RunBook(one_split, lambda spec, rows: []).on_stop(stop_request("nope"), T0) == []


@pytest.mark.parametrize(
    ("destination", "quality", "reason"),
    [
        ({"type": "postgres", "table": "t", "mode": "replace"}, [], "cannot 'replace'"),
        ({"type": "postgres", "table": "t"}, [{"rule": "row_count", "min": 1}], "row_count"),
    ],
)
def test_continuous_specs_reject_what_needs_an_end(destination, quality, reason):
    with pytest.raises(SpecError, match=reason):
        parse_spec(
            {
                "name": "s",
                "source": {"type": "kafka", "topic": "t"},
                "quality": quality,
                "destination": destination,
            }
        )
