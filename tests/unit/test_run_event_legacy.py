"""RunEvent v1-v3 carried their payload as text in ``details``: events those writers put on the wire
decode today with the typed payload a v4 writer would give them, and an empty ``details``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.avro import ModelValidationError
from shared.avro.catalog import SchemaCatalog
from shared.avro.serde import AvroSerde
from shared.contracts import (
    AgentDecision,
    BatchLoaded,
    ControlAction,
    CursorKind,
    EventKind,
    Origin,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunFinalized,
    RunFinished,
    RunPlanned,
    RunStatus,
    Split,
    SplitExtracted,
    SplitKind,
    Stage,
    StreamProgress,
    TaskFailed,
    TaskRetried,
)
from shared.progress import fold
from shared.spec import parse_spec
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = parse_spec(
    {
        "name": "orders",
        "source": {"type": "csv", "path": "/data/orders.csv"},
        "quality": [{"rule": "not_null", "columns": ["id"], "name": "ids"}],
        "destination": {"type": "duckdb", "path": "/tmp/x.db", "table": "orders"},
    }
)
SPLITS = [
    Split(kind=SplitKind.BYTE_RANGE, index=i, count=2, uri="/data/orders.csv", start=i) for i in range(2)
]
SAMPLE = [{"id": None, "amount": 1.5, "ok": True, "n": 3, "name": "x"}]


def v3_bytes(
    kind: EventKind, details: dict[str, str], stage: Stage = Stage.ORCHESTRATE, **fields: Any
) -> bytes:
    """An event exactly as a RunEvent v3 writer encoded it (the v3 schema of the history, its fingerprint)."""
    v3 = SchemaCatalog.default().history(RunEvent.avro_name)[2]
    datum = {
        "event_id": "e1",
        "run_id": "r1",
        "kind": kind.value,
        "stage": stage.value,
        "at": AT,
        "task_id": fields.get("task_id"),
        "batch_id": fields.get("batch_id"),
        "rows_in": fields.get("rows_in", 0),
        "rows_out": fields.get("rows_out", 0),
        "rows_rejected": fields.get("rows_rejected", 0),
        "batches": fields.get("batches", 0),
        "duration_ms": 0,
        "error": None,
        "details": details,
        "instance": "old-1",
    }
    data = AvroSerde(SchemaCatalog([v3])).encode_record(RunEvent.avro_name, datum)
    assert data[2:10] == v3.fingerprint != SchemaCatalog.default().fingerprint(RunEvent.avro_name)
    return data


def decode(data: bytes) -> RunEvent:
    event = AvroSerde().decode(data, RunEvent)
    assert event.details == {}, "nobody reads details after decoding"
    return event


# What each v3 writer wrote (the removed code, verbatim in effect), and what it means now.
V3_EVENTS = [
    (
        EventKind.RUN_ACCEPTED,
        {"pipeline": "orders", "stuck_after_s": "42", "spec": SPEC.model_dump_json(), "continuous": "true"},
        RunAccepted(pipeline="orders", stuck_after_s=42, continuous=True, spec=SPEC),
    ),
    (
        EventKind.RUN_ACCEPTED,
        {"pipeline": "orders", "stuck_after_s": "300"},
        RunAccepted(pipeline="orders", stuck_after_s=300),
    ),
    (
        EventKind.RUN_PLANNED,
        {"splits": "2", "plan": json.dumps([s.model_dump(mode="json") for s in SPLITS])},
        RunPlanned(splits=SPLITS),
    ),
    (
        EventKind.SPLIT_EXTRACTED,
        {"attempt": "1", "split": "3", "cursor_max": "2026-01-01 10:00:00", "cursor_kind": "text"},
        SplitExtracted(
            attempt=1, split_index=3, cursor_max="2026-01-01 10:00:00", cursor_kind=CursorKind.TEXT
        ),
    ),
    (
        EventKind.SPLIT_EXTRACTED,
        {"attempt": "0", "split": "0", "cursor_max": "99", "cursor_kind": "number"},
        SplitExtracted(split_index=0, cursor_max="99", cursor_kind=CursorKind.NUMBER),
    ),
    (EventKind.SPLIT_EXTRACTED, {"attempt": "0", "split": "1"}, SplitExtracted(split_index=1)),
    (EventKind.BATCH_LOADED, {"applied": "false"}, BatchLoaded(applied=False)),
    (EventKind.BATCH_LOADED, {"applied": "true"}, BatchLoaded(applied=True)),
    (
        EventKind.QUALITY_VIOLATION,
        {
            "rule": "ids",
            "on_fail": "quarantine",
            "reason": "1 row with null in id",
            "failed_rows": "1",
            "sample": json.dumps(SAMPLE),
        },
        QualityViolation(
            rule="ids",
            on_fail=OnFail.QUARANTINE,
            reason="1 row with null in id",
            failed_rows=1,
            sample=SAMPLE,
        ),
    ),
    (
        EventKind.QUALITY_VIOLATION,  # v3 cut the sample's JSON at 2000 characters, often mid-row
        {
            "rule": "ids",
            "on_fail": "fail",
            "reason": "r",
            "failed_rows": "7",
            "sample": json.dumps(SAMPLE)[:20],
        },
        QualityViolation(rule="ids", on_fail=OnFail.FAIL, reason="r", failed_rows=7),
    ),
    (
        EventKind.AGENT_DECISION,
        {
            "decision_id": "d1",
            "action": "quarantine_bad_rows",
            "category": "data",
            "reason": "data error",
            "error_class": "QualityRuleFailed",
            "signature": "QualityRuleFailed:ids",
            "spec": SPEC.model_dump_json(),
        },
        AgentDecision(
            decision_id="d1",
            action="quarantine_bad_rows",
            category="data",
            reason="data error",
            error_class="QualityRuleFailed",
            signature="QualityRuleFailed:ids",
            spec=SPEC,
        ),
    ),
    (
        EventKind.TASK_RETRIED,
        {"attempt": "2", "reason": "transient"},
        TaskRetried(attempt=2, reason="transient"),
    ),
    (
        EventKind.TASK_FAILED,
        {"attempt": "1", "offset": "aoetl.tasks.x/3/17"},
        TaskFailed(attempt=1, origin=Origin(topic="aoetl.tasks.x", partition=3, offset=17)),
    ),
    (EventKind.RUN_FINALIZED, {"action": "ABORT"}, RunFinalized(action=ControlAction.ABORT)),
    (EventKind.RUN_FINISHED, {"status": "TIMED_OUT"}, RunFinished(status=RunStatus.TIMED_OUT)),
    (
        EventKind.STREAM_PROGRESS,
        {"topic": "clicks", "partition": "2", "first_offset": "10", "last_offset": "19", "lag": "4"},
        StreamProgress(topic="clicks", partition=2, first_offset=10, last_offset=19, lag=4),
    ),
    (EventKind.STREAM_PROGRESS, {"heartbeat": "true"}, StreamProgress(heartbeat=True)),
]


@pytest.mark.parametrize(("kind", "details", "payload"), V3_EVENTS, ids=lambda v: getattr(v, "value", ""))
def test_a_v3_event_decodes_with_its_typed_payload(
    kind: EventKind, details: dict[str, str], payload: Any
) -> None:
    event = decode(v3_bytes(kind, details))
    assert event.payload == payload and type(event.payload) is type(payload)
    assert (event.event_id, event.instance, event.at) == ("e1", "old-1", AT)


@pytest.mark.parametrize(
    ("kind", "details"),
    [
        (EventKind.TASK_RETRIED, {"reason": "no attempt"}),  # the orchestrator then counts one more
        (EventKind.RUN_FINISHED, {"status": "EXPLODED"}),
        (EventKind.RUN_FINALIZED, {}),
        (EventKind.TASK_STARTED, {"n": "3"}),  # kinds without payload: what they said is dropped
        (EventKind.BATCH_TRANSFORMED, {"anything": "x"}),
    ],
)
def test_what_an_old_event_did_not_say_gives_no_payload(kind: EventKind, details: dict[str, str]) -> None:
    assert decode(v3_bytes(kind, details, Stage.TRANSFORM)).payload is None


def test_old_readers_lenient_fallbacks_are_kept() -> None:
    accepted = decode(v3_bytes(EventKind.RUN_ACCEPTED, {"stuck_after_s": "soon"})).payload
    assert accepted == RunAccepted(pipeline="", stuck_after_s=None)
    violation = decode(v3_bytes(EventKind.QUALITY_VIOLATION, {"failed_rows": "many", "on_fail": "?"})).payload
    assert violation == QualityViolation(
        rule="?", on_fail=OnFail.WARN, reason="a data-quality rule failed", failed_rows=0
    )
    assert decode(v3_bytes(EventKind.BATCH_LOADED, {"applied": "maybe"})).payload == BatchLoaded(
        applied=False
    )


def test_a_malformed_old_spec_is_refused_like_any_undecodable_message() -> None:
    with pytest.raises(ModelValidationError, match="spec"):
        decode(v3_bytes(EventKind.RUN_ACCEPTED, {"pipeline": "p", "spec": '{"name": "no source"}'}))
    with pytest.raises(ModelValidationError):
        decode(v3_bytes(EventKind.RUN_PLANNED, {"plan": "[{"}))


def test_v3_events_fold_like_v4_ones() -> None:
    """A run whose events were written before the upgrade counts as if written after it."""
    figures = {"task_id": "r1:t0", "rows_in": 10, "rows_out": 10}
    old = [
        v3_bytes(EventKind.RUN_PLANNED, V3_EVENTS[2][1]),
        v3_bytes(
            EventKind.SPLIT_EXTRACTED, {"attempt": "0", "split": "0"}, Stage.EXTRACT, batches=1, **figures
        ),
        v3_bytes(EventKind.BATCH_TRANSFORMED, {}, Stage.TRANSFORM, batch_id="b0", **figures),
        v3_bytes(EventKind.BATCH_LOADED, {"applied": "true"}, Stage.LOAD, batch_id="b0", **figures),
        v3_bytes(EventKind.BATCH_LOADED, {"applied": "false"}, Stage.LOAD, batch_id="b0", **figures),
        v3_bytes(EventKind.RUN_FINISHED, {"status": "COMPLETED"}),
    ]
    progress = fold("r1", [decode(data) for data in old])
    assert (progress.splits_planned, progress.splits_extracted, progress.status) == (
        2,
        1,
        RunStatus.COMPLETED,
    )
    stats = {s.stage: (s.rows_out, s.batches) for s in progress.stage_stats()}
    assert stats == {Stage.EXTRACT: (10, 1), Stage.TRANSFORM: (10, 1), Stage.LOAD: (10, 1)}


def test_new_code_cannot_put_details_on_the_wire() -> None:
    """Details given to a v4 event are read into its payload at once: what is encoded carries none."""
    event = RunEvent(run_id="r1", kind=EventKind.BATCH_LOADED, stage=Stage.LOAD, details={"applied": "false"})
    assert event.details == {} and event.payload == BatchLoaded(applied=False)
    assert AvroSerde().decode_record(AvroSerde().encode(event), RunEvent.avro_name)["details"] == {}


def test_an_event_refuses_the_payload_of_another_kind() -> None:
    with pytest.raises(ValueError, match="RUN_FINISHED event cannot carry a BatchLoaded"):
        RunEvent(
            run_id="r1", kind=EventKind.RUN_FINISHED, stage=Stage.LOAD, payload=BatchLoaded(applied=True)
        )
