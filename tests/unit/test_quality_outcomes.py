"""Quality outcomes in the result (PipelineResult v3, RunEvent v7): the transform reports what each rule
checked and a few failing values of its columns; the one progress fold totals them per rule, each batch
once however often its events arrive; the orchestrator lists every row-level rule of the spec with its
action, and what was written where, naming no connection; results and violations of older writers still
decode."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from pydantic import TypeAdapter, ValidationError

from services.orchestrator.outcomes import quality_outcomes, write_outcomes
from services.orchestrator.runs import RunBook
from shared.avro.catalog import SchemaCatalog
from shared.avro.convert import to_datum
from shared.avro.serde import AvroSerde
from shared.contracts import (
    MAX_SAMPLE_CHARS,
    MAX_SAMPLES,
    BatchLoaded,
    EventKind,
    PipelineRequest,
    PipelineResult,
    QualityViolation,
    RuleAction,
    RuleOutcome,
    RunEvent,
    RunStatus,
    Split,
    SplitKind,
    Stage,
    WriteOutcome,
)
from shared.kafka.topics import Topics
from shared.progress import RunProgress, fold
from shared.redaction import MASK, forget_all_secrets, register_secret
from shared.spec.models import OnFail, PipelineSpec
from shared.spec.quality import QualityRule
from shared.transform.quality import QualityChecker, sample_values

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, tzinfo=UTC)


def ev(kind: EventKind, **kw: Any) -> RunEvent:
    return RunEvent(run_id="r1", kind=kind, stage=Stage.TRANSFORM, at=AT, **kw)


def transformed(batch: str, rows_in: int, rows_out: int, rejected: int = 0) -> RunEvent:
    return ev(
        EventKind.BATCH_TRANSFORMED,
        batch_id=batch,
        rows_in=rows_in,
        rows_out=rows_out,
        rows_rejected=rejected,
    )


def violation(
    batch: str,
    rule: str,
    failed: int,
    on_fail: OnFail = OnFail.WARN,
    checked: int | None = None,
    values: tuple[str, ...] = (),
) -> RunEvent:
    payload = QualityViolation(
        rule=rule,
        on_fail=on_fail,
        reason=f"{failed} rows",
        failed_rows=failed,
        rows_checked=checked,
        values=list(values),
    )
    return ev(EventKind.QUALITY_VIOLATION, batch_id=batch, payload=payload)


def loaded(batch: str, rows: int, size: int | None = None) -> RunEvent:
    payload = BatchLoaded(applied=True, bytes=size) if size is not None else None
    return RunEvent(
        run_id="r1",
        kind=EventKind.BATCH_LOADED,
        stage=Stage.LOAD,
        at=AT,
        batch_id=batch,
        rows_out=rows,
        payload=payload,
    )


def spec(quality: list[dict[str, Any]], destination: dict[str, Any] | None = None) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "orders",
            "source": {"type": "csv", "path": "in.csv"},
            "quality": quality,
            "destination": destination or {"type": "duckdb", "path": "out.duckdb", "table": "orders"},
        }
    )


# ------------------------------------------------------------------------------------ the transform
def test_the_transform_reports_the_rows_each_rule_checked_and_values_of_its_columns_only() -> None:
    rules = TypeAdapter(list[QualityRule]).validate_python(
        [
            {"rule": "not_null", "columns": ["id"], "on_fail": "quarantine"},
            {"rule": "range", "column": "amount", "min": 0, "on_fail": "warn"},
        ]
    )
    table = pa.table(
        {
            "id": [1, None, 3, 4, 5, 6, 7, 8],
            "amount": [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, 8.0],
            "secret_note": ["x"] * 8,
        }
    )
    outcome = QualityChecker(rules).check(table)
    ids, amount = outcome.violations
    assert (ids.rows_checked, ids.failed_rows, ids.values) == (8, 1, ["null"])
    # the warn rule sees the 7 rows no quarantine rule took; 6 of them fail it, 5 values are shown
    assert (amount.rows_checked, amount.failed_rows) == (7, 6)
    assert amount.values == ["-1.0", "-3.0", "-4.0", "-5.0", "-6.0"]
    assert not any("x" in value for value in ids.values + amount.values)


def test_sample_values_are_bounded_and_name_every_column_of_a_multi_column_rule() -> None:
    rows = pa.table({"a": ["y" * 500] * 9, "b": [None] * 9, "c": [True] * 9})
    values = sample_values(rows, ["a"])
    assert len(values) == MAX_SAMPLES and all(len(v) == MAX_SAMPLE_CHARS for v in values)
    assert values[0].endswith("...")
    assert sample_values(rows.slice(0, 1), ["b", "c"]) == ["b=null, c=true"]


# ------------------------------------------------------------------------------------------ the fold
def test_per_rule_totals_count_each_batch_once_under_redelivery() -> None:
    batch_1 = [
        violation("b1", "ids", 2, OnFail.QUARANTINE, checked=10, values=("null",)),
        violation("b1", "amount", 7, checked=8, values=("-1", "-2")),
        transformed("b1", 10, rows_out=8, rejected=2),
    ]
    batch_2 = [violation("b2", "amount", 9, checked=10, values=("-2", "-3")), transformed("b2", 10, 10)]
    progress = fold("r1", batch_1 + batch_2 + batch_1 + list(reversed(batch_2)))
    totals = {t.rule: t for t in progress.rule_totals()}
    assert (totals["ids"].rows_checked, totals["ids"].rows_failed) == (20, 2)
    assert (totals["amount"].rows_checked, totals["amount"].rows_failed) == (18, 16)
    assert totals["amount"].samples == ("-1", "-2", "-3")
    assert totals["amount"].fraction == pytest.approx(16 / 18)


def test_samples_of_a_rule_stay_bounded_over_many_batches() -> None:
    events = []
    for n in range(20):
        events += [violation(f"b{n}", "amount", 1, checked=1, values=(str(n),)), transformed(f"b{n}", 1, 1)]
    (totals,) = fold("r1", events).rule_totals()
    assert totals.samples == tuple(str(n) for n in range(MAX_SAMPLES))
    assert (totals.rows_checked, totals.rows_failed) == (20, 20)


def test_a_batch_a_fail_rule_stopped_counts_with_the_rows_it_checked_and_an_old_event_not_at_all() -> None:
    progress = fold("r1", [transformed("b1", 10, 10), violation("b2", "ids", 4, OnFail.FAIL, checked=10)])
    (totals,) = progress.rule_totals()
    assert (totals.failed, totals.rows_checked, totals.rows_failed) == (True, 20, 4)
    progress.apply(violation("b2", "ids", 4, OnFail.FAIL, checked=10))  # redelivered
    assert progress.rule_totals()[0].rows_failed == 4
    old = fold("r1", [transformed("b1", 10, 10), violation("b2", "ids", 4, OnFail.FAIL)])  # a v6 writer's
    assert (old.rule_totals()[0].rows_checked, old.rule_totals()[0].rows_failed) == (10, 0)


def test_the_per_rule_totals_survive_the_monitors_json_round_trip() -> None:
    progress = fold("r1", [violation("b1", "amount", 3, checked=5, values=("-1",)), transformed("b1", 5, 5)])
    again = RunProgress.model_validate(progress.model_dump(mode="json"))
    assert again.rule_totals() == progress.rule_totals()
    # a fold stored before v7 (no samples, no checked_of_failures) still loads
    stored = progress.model_dump(mode="json")
    stored.pop("checked_of_failures")
    for rule in stored["rules"].values():
        rule.pop("samples")
    assert RunProgress.model_validate(stored).rule_totals()[0].rows_failed == 3


# ---------------------------------------------------------------------------------- the orchestrator
QUALITY = [
    {"rule": "not_null", "columns": ["id"], "on_fail": "quarantine"},
    {"rule": "range", "column": "amount", "min": 0, "on_fail": "warn"},
    {"rule": "unique", "columns": ["id", "day"], "on_fail": "fail"},
    {"rule": "row_count", "min": 1, "on_fail": "fail"},
]


def test_every_row_level_rule_of_the_spec_gets_an_outcome_in_spec_order() -> None:
    events = [
        violation("b1", "range:amount", 84, checked=100, values=("-1.5",)),
        transformed("b1", 100, 100),
        loaded("b1", 100),
    ]
    outcomes = quality_outcomes(spec(QUALITY), fold("r1", events))
    assert outcomes == [
        RuleOutcome(rule="not_null:id", columns=["id"], rows_checked=100, action=RuleAction.PASSED),
        RuleOutcome(
            rule="range:amount",
            columns=["amount"],
            rows_checked=100,
            rows_failed=84,
            action=RuleAction.WARNED,
            samples=["-1.5"],
        ),
        RuleOutcome(rule="unique:id,day", columns=["id", "day"], rows_checked=100, action=RuleAction.PASSED),
    ]


def test_actions_follow_what_the_failure_did_and_a_rule_the_spec_lost_still_shows() -> None:
    events = [
        violation("b1", "not_null:id", 3, OnFail.QUARANTINE, checked=10),
        violation("b1", "gone", 1, OnFail.WARN, checked=7),
        transformed("b1", 10, 7, rejected=3),
        violation("b2", "unique:id,day", 2, OnFail.FAIL, checked=10),
    ]
    outcomes = {o.rule: o for o in quality_outcomes(spec(QUALITY), fold("r1", events))}
    assert outcomes["not_null:id"].action is RuleAction.QUARANTINED
    assert (outcomes["unique:id,day"].action, outcomes["unique:id,day"].rows_failed) == (RuleAction.FAILED, 2)
    assert (outcomes["gone"].action, outcomes["gone"].columns, outcomes["gone"].rows_checked) == (
        RuleAction.WARNED,
        [],
        7,
    )
    assert outcomes["range:amount"].action is RuleAction.PASSED


@pytest.mark.parametrize(
    ("destination", "target", "rows_if_aborted"),
    [
        ({"type": "duckdb", "path": "out.duckdb", "table": "orders"}, "out.duckdb:orders", 5),
        ({"type": "duckdb", "path": "o.duckdb", "table": "t", "mode": "replace"}, "o.duckdb:t", 0),
        ({"type": "postgres", "connection": "warehouse", "table": "public.orders"}, "public.orders", 5),
        ({"type": "parquet", "path": "out/orders"}, "out/orders", 0),
        ({"type": "kafka", "topic": "orders.clean"}, "orders.clean", 5),
    ],
)
def test_written_names_the_target_never_the_connection_and_what_an_abort_kept(
    destination: dict[str, Any], target: str, rows_if_aborted: int
) -> None:
    progress = fold("r1", [loaded("b1", 5)])
    the_spec = spec([], destination)
    assert write_outcomes(the_spec, progress, RunStatus.COMPLETED) == [
        WriteOutcome(destination=destination["type"], target=target, rows=5, bytes=None)
    ]
    (aborted,) = write_outcomes(the_spec, progress, RunStatus.FAILED)
    assert aborted.rows == rows_if_aborted
    assert "warehouse" not in aborted.model_dump_json()


@pytest.mark.parametrize(
    ("destination", "bytes_if_aborted"),
    [
        ({"type": "parquet", "path": "out/orders"}, 0),  # abort removes the run's parts
        ({"type": "jsonl", "path": "out/orders"}, 0),
        ({"type": "kafka", "topic": "orders.clean"}, 300),  # produced records stay
    ],
)
def test_written_bytes_are_the_batches_bytes_and_what_an_abort_kept(
    destination: dict[str, Any], bytes_if_aborted: int
) -> None:
    progress = fold("r1", [loaded("b1", 5, size=120), loaded("b2", 5, size=180)])
    the_spec = spec([], destination)
    ((completed,), (aborted,)) = (
        write_outcomes(the_spec, progress, status) for status in (RunStatus.COMPLETED, RunStatus.FAILED)
    )
    assert (completed.rows, completed.bytes) == (10, 300)
    assert aborted.bytes == bytes_if_aborted


def test_written_bytes_are_null_when_a_batch_did_not_say() -> None:
    # the SQL sinks never know (services.load.sinks.ledger), nor did events before RunEvent v11
    progress = fold("r1", [loaded("b1", 5, size=120), loaded("b2", 5)])
    (written,) = write_outcomes(spec([]), progress, RunStatus.COMPLETED)
    assert (written.rows, written.bytes) == (10, None)


# ---------------------------------------------------------------------------------- bounds and secrets
@pytest.fixture
def no_known_secrets() -> Iterator[None]:
    forget_all_secrets()
    yield
    forget_all_secrets()


def test_a_sample_holding_a_known_secret_is_masked_and_samples_are_bounded(no_known_secrets: None) -> None:
    register_secret("s3cret-password-1")
    outcome = RuleOutcome(rule="r", action=RuleAction.WARNED, samples=["user s3cret-password-1"])
    assert outcome.samples == [f"user {MASK}"]
    with pytest.raises(ValidationError):
        RuleOutcome(rule="r", action=RuleAction.WARNED, samples=["v"] * (MAX_SAMPLES + 1))


# ---------------------------------------------------------------------------------- compatibility
def result(**kw: Any) -> PipelineResult:
    return PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="p",
        tenant="acme",
        status=RunStatus.COMPLETED,
        started_at=AT,
        finished_at=AT,
        **kw,
    )


@pytest.mark.parametrize("version", [1, 2])
def test_a_result_of_an_older_writer_decodes_with_no_outcomes(version: int) -> None:
    schema = SchemaCatalog.default().history(PipelineResult.avro_name)[version - 1]
    value = result()
    datum = to_datum(value)
    for name in ("quality", "written", *(("tenant",) if version == 1 else ())):
        datum.pop(name)
    data = AvroSerde(SchemaCatalog([schema])).encode_record(PipelineResult.avro_name, datum)
    decoded = AvroSerde().decode(data, PipelineResult)
    assert (decoded.quality, decoded.written) == ([], [])
    assert decoded.model_dump(exclude={"tenant"}) == value.model_dump(exclude={"tenant"})


def test_outcomes_survive_the_wire() -> None:
    value = result(
        quality=[
            RuleOutcome(
                rule="range:amount",
                columns=["amount"],
                rows_checked=100,
                rows_failed=84,
                action=RuleAction.WARNED,
                samples=["-1.5", "-3.0"],
            )
        ],
        written=[WriteOutcome(destination="duckdb", target="out.duckdb:orders", rows=100)],
    )
    serde = AvroSerde()
    assert serde.decode(serde.encode(value), PipelineResult) == value


def test_a_violation_of_a_v6_writer_decodes_without_checked_rows_or_values() -> None:
    event = violation("b1", "ids", 2, checked=10, values=("null",))
    v6 = SchemaCatalog.default().history(RunEvent.avro_name)[5]
    datum = to_datum(event)
    kind, payload = datum["payload"]
    datum["payload"] = (kind, {k: v for k, v in payload.items() if k not in ("rows_checked", "values")})
    data = AvroSerde(SchemaCatalog([v6])).encode_record(RunEvent.avro_name, datum)
    old = AvroSerde().decode(data, RunEvent).payload_as(QualityViolation)
    assert old is not None and (old.rows_checked, old.values, old.failed_rows) == (None, [], 2)
    serde = AvroSerde()
    current = serde.decode(serde.encode(event), RunEvent).payload_as(QualityViolation)
    assert current is not None and (current.rows_checked, current.values) == (10, ["null"])


# ------------------------------------------------------------------------- the result the orchestrator writes
def test_the_orchestrators_result_carries_the_outcomes_each_redelivered_event_counted_once() -> None:
    the_spec = spec(QUALITY[:2])
    book = RunBook(lambda s, p: [Split(kind=SplitKind.WHOLE, index=0, count=1)], lambda s, rows: [])
    book.on_request(PipelineRequest(run_id="r1", request_id="q1", spec=the_spec), the_spec, AT)
    extracted = RunEvent(
        run_id="r1", kind=EventKind.SPLIT_EXTRACTED, stage=Stage.EXTRACT, at=AT, task_id="r1:t0", batches=2
    )
    events = [extracted]
    for n, failing in enumerate((90, 78)):
        batch = f"r1:t0:{n}"
        events += [
            violation(batch, "range:amount", failing, checked=100, values=(f"-{n}",)),
            transformed(batch, 100, 100),
            loaded(batch, 100, size=1000 + n),  # the fold sums what any sink said, once per batch
        ]
    outputs = []
    for event in events + events:  # every event delivered twice
        outputs += book.on_event(event, AT)
    finalized = RunEvent(run_id="r1", kind=EventKind.RUN_FINALIZED, stage=Stage.LOAD, at=AT)
    (result,) = [o.value for o in book.on_event(finalized, AT) if o.topic == Topics.RESULTS]
    assert isinstance(result, PipelineResult) and result.status is RunStatus.COMPLETED
    assert [(o.rule, o.rows_failed, o.rows_checked, o.action, o.samples) for o in result.quality] == [
        ("not_null:id", 0, 200, RuleAction.PASSED, []),
        ("range:amount", 168, 200, RuleAction.WARNED, ["-0", "-1"]),
    ]
    assert result.written == [
        WriteOutcome(destination="duckdb", target="out.duckdb:orders", rows=200, bytes=2001)
    ]
