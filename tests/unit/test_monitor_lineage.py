"""The monitor's lineage fold without a broker: a dict stands for the faust table and a list for the
transport; every event is serialised by openlineage-python and checked against the vendored OpenLineage
JSON Schemas."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from openlineage.client.serde import Serde

from services.monitor.lineage.datasets import Column, destination_dataset, output_columns, source_dataset
from services.monitor.lineage.events import lineage_run_id
from services.monitor.lineage.settings import LineageSettings
from services.monitor.lineage.tracker import LineageTracker
from shared.contracts import (
    ErrorInfo,
    EventKind,
    RunAccepted,
    RunEvent,
    RunFinished,
    RunStatus,
    Stage,
)
from shared.redaction import register_secret
from shared.spec.loader import parse_spec
from shared.spec.models import PipelineSpec
from tests.support.openlineage_schema import validate_run_event

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RUN = "8c2cca62675d4c508adfb44bb2c1ef57"


def spec(**kw: Any) -> PipelineSpec:
    base: dict[str, Any] = {
        "name": "orders",
        "source": {"type": "csv", "path": "file:///data/in/orders-*.csv"},
        "transforms": [
            {"op": "select", "columns": ["id", "amount", "status"]},
            {"op": "cast", "columns": {"id": "int64", "amount": "float64"}},
            {"op": "rename", "mapping": {"amount": "total"}},
            {"op": "derive", "column": "big", "expr": "total > 100"},
        ],
        "destination": {"type": "postgres", "connection": "warehouse", "table": "sales.orders"},
    }
    return parse_spec({**base, **kw})


class Transport:
    def __init__(self, fail: bool = False):
        self.events: list[dict[str, Any]] = []
        self.fail = fail

    def emit(self, event: Any) -> None:
        if self.fail:
            raise ConnectionError("lineage backend down")
        self.events.append(json.loads(Serde.to_json(event)))


class Specs:
    def __init__(self, found: PipelineSpec | None):
        self.found = found
        self.asked: list[tuple[str, int]] = []

    def spec_of(self, run_id: str, partition: int, at: datetime, tenant: str | None) -> PipelineSpec | None:
        self.asked.append((run_id, partition))
        return self.found


def tracker(transport: Transport, specs: Specs | None = None) -> LineageTracker:
    return LineageTracker(
        LineageSettings(enabled=True, producer="urn:aoetl:monitor:test"),
        {},
        kafka_bootstrap="broker:9092",
        emitter=transport,
        specs=specs,
    )


def accepted(run_spec: PipelineSpec | None, tenant: str | None = None, run_id: str = RUN) -> RunEvent:
    payload = RunAccepted(pipeline="orders", spec=run_spec, tenant=tenant)
    return RunEvent(
        run_id=run_id, kind=EventKind.RUN_ACCEPTED, stage=Stage.ORCHESTRATE, at=T0, payload=payload
    )


def finished(status: RunStatus, run_id: str = RUN) -> RunEvent:
    return RunEvent(
        run_id=run_id,
        kind=EventKind.RUN_FINISHED,
        stage=Stage.ORCHESTRATE,
        at=T0,
        payload=RunFinished(status=status),
    )


def fold(t: LineageTracker, *events: RunEvent, rows_loaded: int | None = None) -> None:
    async def run() -> None:
        for event in events:
            await t.on_event(event, partition=3, rows_loaded=rows_loaded)

    asyncio.run(run())


def test_a_completed_run_is_one_start_and_one_complete_valid_against_the_schema() -> None:
    transport = Transport()
    t = tracker(transport)
    fold(t, accepted(spec()), accepted(spec()), finished(RunStatus.COMPLETED), rows_loaded=42)
    fold(t, finished(RunStatus.COMPLETED))  # redelivered: nothing more
    assert [e["eventType"] for e in transport.events] == ["START", "COMPLETE"]
    for event in transport.events:
        validate_run_event(event)
        assert event["run"]["runId"] == "8c2cca62-675d-4c50-8adf-b44bb2c1ef57"
        assert event["job"] == {**event["job"], "namespace": "aoetl", "name": "orders"}
        assert event["eventTime"] == T0.isoformat()
        (source,) = event["inputs"]
        assert (source["namespace"], source["name"]) == ("file", "/data/in/orders-*.csv")
        assert [f["name"] for f in source["facets"]["schema"]["fields"]] == ["id", "amount", "status"]
        (output,) = event["outputs"]
        assert (output["namespace"], output["name"]) == ("postgres://warehouse", "sales.orders")
        fields = {f["name"]: f.get("type") for f in output["facets"]["schema"]["fields"]}
        assert fields == {"id": "int64", "total": "float64", "status": None, "big": None}
    assert transport.events[1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 42
    assert t.table == {}  # the finished run is forgotten


def test_a_failed_run_is_start_and_fail_with_the_runs_error_and_the_tenants_namespace() -> None:
    transport = Transport()
    t = tracker(transport)
    error = RunEvent(
        run_id="my-own-run",
        kind=EventKind.TASK_FAILED,
        stage=Stage.EXTRACT,
        at=T0,
        error=ErrorInfo(error_class="FileNotFoundError", message="no file matches /data/in/x.csv"),
    )
    fold(
        t,
        accepted(spec(), tenant="acme", run_id="my-own-run"),
        error,
        finished(RunStatus.FAILED, "my-own-run"),
    )
    assert [e["eventType"] for e in transport.events] == ["START", "FAIL"]
    for event in transport.events:
        validate_run_event(event)
        assert event["job"]["namespace"] == "aoetl.acme"
    fail = transport.events[1]
    assert fail["run"]["facets"]["errorMessage"]["message"] == "no file matches /data/in/x.csv"
    assert fail["run"]["runId"] == lineage_run_id("my-own-run") == transport.events[0]["run"]["runId"]


def test_cancelled_is_abort_and_rejected_runs_have_no_lineage() -> None:
    transport = Transport()
    t = tracker(transport)
    fold(t, finished(RunStatus.REJECTED, "rejected"), accepted(spec()), finished(RunStatus.CANCELLED))
    assert [e["eventType"] for e in transport.events] == ["START", "ABORT"]


def test_the_requests_spec_is_read_back_when_run_accepted_does_not_carry_it() -> None:
    transport = Transport()
    specs = Specs(spec())
    fold(tracker(transport, specs), accepted(None))
    assert specs.asked == [(RUN, 3)]
    assert transport.events[0]["outputs"][0]["name"] == "sales.orders"
    transport = Transport()
    fold(tracker(transport, Specs(None)), accepted(None))  # gone with retention: a job without datasets
    assert (transport.events[0]["inputs"], transport.events[0]["outputs"]) == ([], [])
    validate_run_event(transport.events[0])


def test_a_lineage_backend_that_is_down_does_not_stop_the_fold() -> None:
    t = tracker(Transport(fail=True))
    fold(t, accepted(spec()), finished(RunStatus.COMPLETED))
    assert t.table == {}


def test_datasets_carry_no_credentials_query_strings_or_known_secrets() -> None:
    register_secret("s3cr3t-token-value")
    http = spec(
        source={"type": "http", "url": "https://api.example.com:8443/v1/orders?api_key=s3cr3t-token-value"}
    )
    dataset = source_dataset(http, "broker:9092")
    assert (dataset.namespace, dataset.name) == ("https://api.example.com:8443", "/v1/orders")
    leaky = spec(destination={"type": "jsonl", "path": "/data/out/s3cr3t-token-value"})
    assert "s3cr3t-token-value" not in destination_dataset(leaky, "b:9092").name
    kafka = spec(source={"type": "kafka", "topic": "clicks"}, destination={"type": "kafka", "topic": "out"})
    assert source_dataset(kafka, "b:9092").namespace == "kafka://b:9092"


def test_output_columns_are_unknown_after_a_sql_step() -> None:
    steps = [{"op": "cast", "columns": {"id": "int64"}}, {"op": "sql", "query": "SELECT id FROM batch"}]
    assert output_columns(spec(transforms=steps)) == ()
    assert output_columns(spec(transforms=[{"op": "cast", "columns": {"id": "int64"}}])) == (
        Column("id", "int64"),
    )


def test_an_event_that_breaks_the_schema_is_caught() -> None:
    transport = Transport()
    fold(tracker(transport), accepted(spec()))
    broken = {**transport.events[0], "run": {"runId": "not-a-uuid"}}
    with pytest.raises(jsonschema.ValidationError):
        validate_run_event(broken)
    facet = transport.events[0]["inputs"][0]["facets"]["schema"]
    bad_facet = {**transport.events[0]}
    bad_facet["inputs"] = [
        {**transport.events[0]["inputs"][0], "facets": {"schema": {**facet, "fields": [{}]}}}
    ]
    with pytest.raises(jsonschema.ValidationError):
        validate_run_event(bad_facet)


def test_off_unless_an_openlineage_transport_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENLINEAGE_URL",
        "OPENLINEAGE_CONFIG",
        "OPENLINEAGE__TRANSPORT__TYPE",
        "OPENLINEAGE_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    assert not LineageSettings().is_enabled()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    assert LineageSettings().is_enabled()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not LineageSettings().is_enabled()
    assert LineageSettings(enabled=True).is_enabled()
