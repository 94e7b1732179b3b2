"""The pydantic models and the ``.avsc`` files describe the same records, and every message survives an
Avro round trip. ``rich_messages()`` is reused by the Kafka round-trip test."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter

from shared.avro.catalog import schemas_dir
from shared.avro.convert import avro_name_of, discriminator_of, variants
from shared.avro.serde import AvroSerde
from shared.contracts import (
    MESSAGE_TYPES,
    AgentDecision,
    Alert,
    AlertKind,
    ApiKey,
    AuditChannel,
    AuditOutcome,
    AuditRecord,
    BatchLoaded,
    ConsumerLag,
    Contract,
    ControlAction,
    CursorKind,
    DataBatch,
    DeadLetter,
    DeliveryRun,
    DeliveryState,
    ErrorInfo,
    EventKind,
    EventPayload,
    ExtractTask,
    Origin,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    PipelineWatermark,
    QualityViolation,
    RequestAction,
    Role,
    RuleAction,
    RuleOutcome,
    RunAccepted,
    RunControl,
    RunEvent,
    RunFinalized,
    RunFinished,
    RunPlanned,
    RunStatus,
    RunSummary,
    ScheduleState,
    Severity,
    Split,
    SplitExtracted,
    SplitKind,
    Stage,
    StageStats,
    StreamProgress,
    StreamRun,
    StreamState,
    TaskFailed,
    TaskRetried,
    Trigger,
    TriggerKind,
    WebhookDelivery,
    WriteOutcome,
)
from shared.schedules import MissedTicks
from shared.spec.models import (
    CastStep,
    CsvSource,
    DataType,
    DedupeStep,
    DeriveStep,
    DuckDBDestination,
    EventSource,
    FillStep,
    FilterStep,
    HttpSource,
    JsonlDestination,
    JsonlSource,
    KafkaDestination,
    KafkaSource,
    MaskMethod,
    MaskStep,
    Pagination,
    ParquetDestination,
    ParquetSource,
    PipelineSpec,
    PostgresDestination,
    PostgresSource,
    RenameStep,
    RunParameters,
    SelectStep,
    SqlStep,
    StreamFormat,
    WriteMode,
)
from shared.spec.plugins import PLUGIN_BASES
from shared.spec.quality import (
    AcceptedValuesRule,
    NotNullRule,
    OnFail,
    RangeRule,
    RegexRule,
    RowCountRule,
    UniqueRule,
)
from shared.triggers import ScheduleTrigger, TopicTrigger, TriggerStart, TriggerWindow, WebhookTrigger

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)  # whole milliseconds: timestamp-millis keeps them


# ------------------------------------------------------------------------------------------ samples
def rich_specs() -> list[PipelineSpec]:
    """Together these use every source, transform, rule and destination variant with non-default values."""
    transforms = [
        SelectStep(columns=["id", "name", "amount"]),
        RenameStep(mapping={"name": "full_name"}),
        CastStep(columns={"amount": DataType.FLOAT64, "day": DataType.DATE}, formats={"day": "%Y-%m-%d"}),
        FilterStep(expr="amount > 0"),
        DeriveStep(column="double_amount", expr="amount * 2"),
        SqlStep(query="SELECT * FROM batch"),
        DedupeStep(keys=["id"]),
        MaskStep(columns=["full_name"], method=MaskMethod.PARTIAL),
        FillStep(values={"a": "x", "b": 7, "c": 2.5, "d": True}),
    ]
    quality = [
        NotNullRule(columns=["id"], name="ids"),
        UniqueRule(columns=["id", "day"], on_fail=OnFail.QUARANTINE),
        RangeRule(column="amount", min=0.0, max=1e6, on_fail=OnFail.WARN),
        RegexRule(column="full_name", pattern=r"^\w+$"),
        AcceptedValuesRule(column="status", values=["a", "b"]),
        RowCountRule(min=1, max=10_000, on_fail=OnFail.WARN),
    ]
    sources = [
        CsvSource(path="/data/*.csv", delimiter=";", has_header=False, null_values=["-"]),
        JsonlSource(path="file:///data/in.jsonl"),
        ParquetSource(path="/data/in.parquet"),
        PostgresSource(
            table="public.orders", cursor_column="updated_at", cursor_start="2026-01-01", split_column="id"
        ),
        HttpSource(
            url="https://api.example.test/items",
            records_path="data.items",
            pagination=Pagination.CURSOR,
            cursor_path="meta.next",
            connection="items-api",
            rate_limit_per_s=2.5,
            max_pages=9,
            max_retries=2,
        ),
        KafkaSource(topic="in.topic", format=StreamFormat.AVRO),
        EventSource(records_path="body.records"),
    ]
    destinations = [
        PostgresDestination(table="public.out", mode=WriteMode.MERGE, keys=["id"], connection="warehouse"),
        DuckDBDestination(path="/tmp/x.duckdb", table="out", mode=WriteMode.REPLACE),
        ParquetDestination(path="/out/parquet"),
        JsonlDestination(path="/out/jsonl"),
        KafkaDestination(topic="out.topic"),
    ]
    run = RunParameters(parallelism=4, batch_rows=1000, timeout_s=60, max_retries=1, stuck_after_s=30)
    return [
        PipelineSpec(
            name=f"spec-{i}",
            description="every variant" if i == 0 else None,
            source=source,
            transforms=transforms if i == 0 else [],
            quality=quality if i == 0 else [],
            destination=destinations[i % len(destinations)],
            run=run if i % 2 == 0 else RunParameters(),
        )
        for i, source in enumerate(sources)
    ] + [
        PipelineSpec(
            name="pg-query",
            source=PostgresSource(query="WITH x AS (SELECT 1) SELECT * FROM x", dsn_env="LEGACY_DSN"),
            destination=KafkaDestination(topic="t"),
        )
    ]


def rich_triggers() -> list[WebhookTrigger | TopicTrigger | ScheduleTrigger]:
    return [
        WebhookTrigger(
            source="github",
            event="push",
            where={"ref": "refs/heads/main", "n": 3, "x": 1.5, "ok": True, "gone": None},
            parameters={"commit": "head_commit.id"},
        ),
        TopicTrigger(
            topic="orders.events",
            format=StreamFormat.AVRO,
            where={"kind": "created"},
            parameters={"customer": "customer.id"},
            window=TriggerWindow(events=50, seconds=2.5),
            start_from=TriggerStart.EARLIEST,
        ),
        ScheduleTrigger(
            cron="*/5 * * * *",
            timezone="Europe/Paris",
            missed=MissedTicks.ALL,
            max_catch_up=3,
            parameters={"region": "eu"},
        ),
    ]


def rich_events(spec: PipelineSpec) -> list[RunEvent]:
    """One event per payload record, every optional payload field set somewhere."""
    split = Split(kind=SplitKind.BYTE_RANGE, index=0, count=2, uri="/data/a.csv", start=0, end=99)
    payloads: list[EventPayload] = [
        RunAccepted(
            pipeline="orders", stuck_after_s=30, continuous=True, spec=spec, parameters={"day": "d1"}
        ),
        RunAccepted(pipeline="orders"),
        RunPlanned(splits=[split, split.model_copy(update={"index": 1, "start": 99, "end": 200})]),
        SplitExtracted(attempt=1, split_index=3, cursor_max="2026-01-02", cursor_kind=CursorKind.NUMBER),
        BatchLoaded(applied=False),
        QualityViolation(
            rule="ids",
            on_fail=OnFail.QUARANTINE,
            reason="2 rows with null in id",
            failed_rows=2,
            sample=[{"id": None, "ok": True, "n": 7, "x": 1.5, "s": "text"}],
            rows_checked=9,
            values=["null", "null"],
        ),
        AgentDecision(
            decision_id="d1",
            action="quarantine_bad_rows",
            category="data",
            reason="data error",
            error_class="QualityRuleFailed",
            signature="QualityRuleFailed:ids",
            spec=spec,
        ),
        TaskRetried(attempt=2, reason="transient failure; retry 2/3"),
        TaskFailed(attempt=1, origin=Origin(topic="aoetl.tasks", partition=1, offset=7, key=b"r1")),
        RunFinalized(action=ControlAction.FINALIZE),
        RunFinished(status=RunStatus.CANCELLED),
        StreamProgress(topic="clicks", partition=2, first_offset=10, last_offset=19, lag=4),
        StreamProgress(heartbeat=True),
    ]
    return [
        RunEvent(
            run_id="r1",
            kind=EventKind(p.type),
            stage=Stage.ORCHESTRATE,
            at=T0,
            task_id="t1",
            batch_id="t1:0",
            payload=p,
        )
        for p in payloads
    ]


def rich_messages() -> list[Contract]:
    """At least one instance of every message type, every optional field set somewhere."""
    spec, *other_specs = rich_specs()
    error = ErrorInfo(error_class="SpecError", message="bad", transient=True, path="source.path")
    return [
        PipelineRequest(
            submitted_at=T0,
            requested_by="alice",
            trigger=Trigger(kind=TriggerKind.WEBHOOK, source="github", delivery_id="d-1"),
            spec=spec,
            definition_name="orders",
            intent="load the orders",
            parameters={"day": "2026-03-04"},
            payload=b'{"records": []}',
        ),
        PipelineRequest(submitted_at=T0, definition_name="orders"),
        PipelineRequest(submitted_at=T0, run_id="r1", action=RequestAction.STOP),
        *(
            PipelineDefinition(name=s.name, version=3, spec=s, updated_at=T0, updated_by="bob")
            for s in other_specs
        ),
        PipelineDefinition(name="hooked", spec=spec, updated_at=T0, triggers=rich_triggers()),
        StreamRun(pipeline="orders", run_id="r9", state=StreamState.STOPPED, spec=spec, at=T0),
        ScheduleState(definition="orders", rule=1, tick=T0, run_id="r10", fired_at=T0),
        WebhookDelivery(
            source="github",
            identity="sha256:" + "ab" * 32,
            claim_id="c1",
            state=DeliveryState.CLAIMED,
            delivery_id="d-1",
            event="push",
            first_seen_at=T0,
            runs=[DeliveryRun(run_id="r1", definition="orders", parameters={"commit": "abc"})],
        ),
        WebhookDelivery(
            source="billing",
            identity="id:evt_1",
            claim_id="c2",
            state=DeliveryState.STARTED,
            delivery_id="evt_1",
            first_seen_at=T0,
        ),
        ExtractTask(
            run_id="r1",
            task_id="t1",
            attempt=2,
            split=Split(
                kind=SplitKind.KEY_RANGE, index=1, count=4, uri="pg", start=0, end=9, lower="10", upper="20"
            ),
            spec=spec,
            payload=b"\x00\x01",
            created_at=T0,
        ),
        DataBatch(
            run_id="r1",
            task_id="t1",
            batch_id="t1:0",
            seq=0,
            stage=Stage.EXTRACT,
            row_count=3,
            payload=bytes(range(256)),
            spec=spec,
            produced_at=T0,
        ),
        RunEvent(
            run_id="r1",
            kind=EventKind.BATCH_FAILED,
            stage=Stage.LOAD,
            at=T0,
            task_id="t1",
            batch_id="t1:0",
            rows_in=5,
            rows_out=4,
            rows_rejected=1,
            batches=1,
            duration_ms=12,
            error=error,
            instance="load-1",
        ),
        *rich_events(spec),
        RunControl(run_id="r1", action=ControlAction.ABORT, spec=spec, at=T0),
        PipelineWatermark(
            pipeline="orders",
            cursor_column="updated_at",
            value="2026-01-01 00:00:00",
            run_id="r1",
            updated_at=T0,
        ),
        PipelineResult(
            run_id="r1",
            request_id="q1",
            pipeline="orders",
            status=RunStatus.TIMED_OUT,
            parameters={"day": "2026-03-01"},
            started_at=T0,
            finished_at=T0,
            stages=[
                StageStats(
                    stage=Stage.TRANSFORM, rows_in=3, rows_out=2, rows_rejected=1, batches=1, duration_ms=7
                )
            ],
            errors=[error],
            decisions=["retry", "give up"],
            quality=[
                RuleOutcome(
                    rule="ids",
                    columns=["id"],
                    rows_checked=3,
                    rows_failed=1,
                    action=RuleAction.QUARANTINED,
                    samples=["null"],
                )
            ],
            written=[WriteOutcome(destination="duckdb", target="out.duckdb:orders", rows=2, bytes=120)],
        ),
        PipelineResult(
            run_id="r2",
            request_id="q2",
            pipeline=None,
            status=RunStatus.REJECTED,
            started_at=T0,
            finished_at=T0,
        ),
        Alert(
            kind=AlertKind.CONSUMER_LAG,
            severity=Severity.CRITICAL,
            message="lag",
            at=T0,
            run_id="r1",
            pipeline="orders",
            labels={"topic": "aoetl.tasks"},
        ),
        DeadLetter(
            origin=Origin(topic="aoetl.tasks", partition=2, offset=99, key=b"r1", schema_fingerprint="00ff"),
            stage=Stage.TRANSFORM,
            error=error,
            at=T0,
            run_id="r1",
            rule="not_null:id",
            payload=b"\xc3\x01garbage",
            payload_format="arrow_ipc",
            attempt=3,
            recipient="ops",
        ),
        ApiKey(
            key_id="0123456789abcdef",
            tenant="acme",
            role=Role.OPERATOR,
            secret_sha256="ab" * 32,
            created_at=T0,
            created_by="user:root",
            description="nightly loads",
            revoked_at=T0,
            revoked_by="key:fedcba9876543210",
        ),
        ApiKey(
            key_id="1111222233334444", tenant="t", role=Role.VIEWER, secret_sha256="cd" * 32, created_at=T0
        ),
        AuditRecord(
            at=T0,
            request_id="req-1",
            channel=AuditChannel.REST,
            actor="key:0123456789abcdef",
            key_id="0123456789abcdef",
            tenant="acme",
            role=Role.ADMIN,
            action="definitions.put",
            object="definition/orders",
            outcome=AuditOutcome.DENIED,
            reason="needs admin",
        ),
        AuditRecord(
            at=T0,
            request_id="req-2",
            channel=AuditChannel.CLI,
            actor="user:ana",
            tenant="default",
            action="runs.submit",
            object="run/r1",
            outcome=AuditOutcome.ALLOWED,
        ),
        RunSummary(
            run_id="r1",
            pipeline="orders",
            tenant="acme",
            status=RunStatus.FAILED,
            continuous=True,
            submitted_at=T0,
            started_at=T0,
            finished_at=T0,
            rows_extracted=10,
            rows_transformed=9,
            rows_loaded=8,
            rows_rejected=1,
            batches_loaded=2,
            bytes_loaded=4096,
            rules_violated=1,
            rows_failed_quality=3,
            error=error,
            as_of=T0,
        ),
        RunSummary(run_id="r2", as_of=T0),
        ConsumerLag(group="aoetl-load", topics={"aoetl.data.transformed": 12}, at=T0),
    ]


# ----------------------------------------------------------------------------------- schema <-> model
@cache
def raw_schema(name: str) -> dict[str, Any]:
    return json.loads((schemas_dir() / f"{name}.avsc").read_text())


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def check_type(annotation: Any, avro: Any, where: str, checked: set[str]) -> None:
    annotation = _strip_annotated(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [_strip_annotated(a) for a in get_args(annotation)]
        assert isinstance(avro, list), f"{where}: a union in the model, {avro!r} in Avro"
        if type(None) in members:
            assert avro[0] == "null", f"{where}: nullable fields are ['null', T]"
            members.remove(type(None))
            avro = avro[1:]
        # an optional discriminated union, or the built-in union beside a plugin base (spec unions)
        members = [
            flat
            for member in members
            for flat in (
                [_strip_annotated(a) for a in get_args(member)]
                if get_origin(member) in (Union, types.UnionType)
                else [member]
            )
        ]
        if len(members) == 1:
            assert len(avro) == 1, f"{where}: {avro!r}"
            check_type(members[0], avro[0], where, checked)
            return
        assert len(avro) == len(members), f"{where}: branches {avro!r} vs {members!r}"
        for member, branch in zip(members, avro, strict=True):
            check_type(member, branch, f"{where}|{getattr(member, '__name__', member)}", checked)
        return
    assert not isinstance(avro, list), f"{where}: Avro union {avro!r} for non-union {annotation!r}"
    if origin is list:
        assert isinstance(avro, dict) and avro["type"] == "array", f"{where}: {avro!r}"
        check_type(get_args(annotation)[0], avro["items"], f"{where}[]", checked)
    elif origin is dict:
        assert get_args(annotation)[0] is str, f"{where}: Avro map keys are strings"
        assert isinstance(avro, dict) and avro["type"] == "map", f"{where}: {avro!r}"
        check_type(get_args(annotation)[1], avro["values"], f"{where}{{}}", checked)
    elif annotation is datetime:
        assert avro == {"type": "long", "logicalType": "timestamp-millis"}, f"{where}: {avro!r}"
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        assert isinstance(avro, str), f"{where}: enums are defined once and referenced by name"
        enum = raw_schema(avro)
        assert enum["type"] == "enum" and enum.get("doc"), f"{where}: {enum!r}"
        assert enum["name"] == annotation.__name__
        assert enum["symbols"] == [member.value for member in annotation], f"{where}: symbols"
        checked.add(avro)
    elif isinstance(annotation, type) and annotation in PLUGIN_BASES.values():
        # a plugin section travels as an envelope: its discriminator and its other fields as JSON
        assert avro == avro_name_of(annotation), f"{where}: records are referenced by full name"
        envelope = raw_schema(avro)
        (field,) = annotation.model_fields
        assert [(f["name"], f["type"]) for f in envelope["fields"]] == [
            (field, "string"),
            ("options", "string"),
        ]
        assert envelope.get("doc") and all(f.get("doc") for f in envelope["fields"]), where
        checked.add(avro)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        assert avro == avro_name_of(annotation), f"{where}: records are referenced by full name"
        check_model(annotation, checked)
    else:
        expected = {str: "string", bool: "boolean", int: "long", float: "double", bytes: "bytes"}[annotation]
        assert avro == expected, f"{where}: {annotation!r} -> {avro!r}, expected {expected!r}"


def check_model(model: type[BaseModel], checked: set[str]) -> None:
    name = avro_name_of(model)
    if name in checked:
        return
    checked.add(name)
    schema = raw_schema(name)
    assert schema["type"] == "record" and schema.get("doc"), name
    assert f"{schema['namespace']}.{schema['name']}" == name
    tag = discriminator_of(model)
    expected = [f for f in model.model_fields if not tag or f != tag[0]]
    assert [f["name"] for f in schema["fields"]] == expected, f"{name}: field names/order"
    for avro_field in schema["fields"]:
        info = model.model_fields[avro_field["name"]]
        where = f"{name}.{avro_field['name']}"
        assert avro_field.get("doc"), f"{where} has no doc"
        check_type(info.annotation, avro_field["type"], where, checked)
        if info.is_required():
            assert "default" not in avro_field, f"{where}: required in the model, defaulted in Avro"
            continue
        annotation: Any = info.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        if info.default_factory is None:
            expected_default: Any = adapter.dump_python(info.default, mode="json")
        elif "default" in avro_field:
            factory: Any = info.default_factory
            expected_default = adapter.dump_python(factory(), mode="json")
        else:
            continue  # a generated default (new id, now): nothing a schema could state
        assert avro_field.get("default", "<none>") == expected_default, f"{where}: default"


def test_every_model_agrees_with_its_schema() -> None:
    checked: set[str] = set()
    models: list[type[BaseModel]] = [*MESSAGE_TYPES, PipelineSpec]
    for model in models:
        check_model(model, checked)
    on_disk = {p.name.removesuffix(".avsc") for p in schemas_dir().glob("*.avsc")}
    assert on_disk == checked, "every .avsc belongs to a model or enum, and every model has one"


# ------------------------------------------------------------------------------------------ round trip
def test_samples_cover_every_message_type_and_variant() -> None:
    messages = rich_messages()
    assert {type(m) for m in messages} == set(MESSAGE_TYPES)
    used: set[str] = set()
    for spec in rich_specs():
        used.add(avro_name_of(type(spec.source)))
        used.add(avro_name_of(type(spec.destination)))
        used.update(avro_name_of(type(x)) for x in (*spec.transforms, *spec.quality))
    used.update(avro_name_of(type(t)) for t in rich_triggers())
    used.update(avro_name_of(type(m.payload)) for m in messages if isinstance(m, RunEvent) and m.payload)
    assert used == set(variants())


@pytest.mark.parametrize("message", rich_messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Contract) -> None:
    serde = AvroSerde()
    decoded = serde.decode(serde.encode(message), type(message))
    assert decoded == message
    assert type(decoded) is type(message)
