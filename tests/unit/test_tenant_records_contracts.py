"""Results, alerts, dead letters and RUN_ACCEPTED carry a tenant (PipelineResult/Alert/DeadLetter v2,
RunEvent v6), and what older writers wrote still decodes: results and alerts as tenant ``default``, a dead
letter and a RUN_ACCEPTED with no tenant (``None``: its run's tenant decides, see ``shared.dead_letters``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.avro.catalog import SchemaCatalog
from shared.avro.convert import to_datum
from shared.avro.serde import AvroSerde
from shared.contracts import (
    DEFAULT_TENANT,
    Alert,
    AlertKind,
    Contract,
    DeadLetter,
    ErrorInfo,
    EventKind,
    Origin,
    PipelineResult,
    RunAccepted,
    RunEvent,
    RunStatus,
    Severity,
    Stage,
)

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def old_bytes(model: type[Contract], version: int, value: Contract, *, drop: tuple[str, ...]) -> bytes:
    """``value`` as the writer of ``version`` (1-based, from the history) encoded it: without ``drop``."""
    schema = SchemaCatalog.default().history(model.avro_name)[version - 1]
    datum = to_datum(value)
    for name in drop:
        datum.pop(name)
    data = AvroSerde(SchemaCatalog([schema])).encode_record(model.avro_name, datum)
    assert data[2:10] == schema.fingerprint != SchemaCatalog.default().fingerprint(model.avro_name)
    return data


def result(**kw: Any) -> PipelineResult:
    return PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="p",
        status=RunStatus.FAILED,
        started_at=AT,
        finished_at=AT,
        **kw,
    )


def alert(**kw: Any) -> Alert:
    return Alert(kind=AlertKind.RUN_FAILED, severity=Severity.CRITICAL, message="m", at=AT, run_id="r1", **kw)


def dead_letter(**kw: Any) -> DeadLetter:
    return DeadLetter(
        origin=Origin(topic="t", partition=0, offset=1),
        stage=Stage.EXTRACT,
        error=ErrorInfo(error_class="E", message="m"),
        at=AT,
        run_id="r1",
        payload=b"\x00raw",
        **kw,
    )


@pytest.mark.parametrize(
    ("model", "value", "expected"),
    [
        (PipelineResult, result(), DEFAULT_TENANT),
        (Alert, alert(), DEFAULT_TENANT),
        (DeadLetter, dead_letter(), None),
    ],
)
def test_a_v1_record_decodes_with_its_default_tenant(
    model: type[Contract], value: Contract, expected: Any
) -> None:
    decoded = AvroSerde().decode(old_bytes(model, 1, value, drop=("tenant",)), model)
    assert decoded.model_dump()["tenant"] == expected
    assert decoded.model_dump(exclude={"tenant"}) == value.model_dump(exclude={"tenant"})


@pytest.mark.parametrize(
    ("model", "value"),
    [
        (PipelineResult, result(tenant="acme")),
        (Alert, alert(tenant="acme")),
        (DeadLetter, dead_letter(tenant="acme")),
    ],
)
def test_the_tenant_survives_the_wire(model: type[Contract], value: Contract) -> None:
    serde = AvroSerde()
    assert serde.decode(serde.encode(value), model) == value


def test_a_run_accepted_of_a_v5_writer_has_no_tenant_and_a_v6_one_keeps_it() -> None:
    event = RunEvent(
        run_id="r1",
        kind=EventKind.RUN_ACCEPTED,
        stage=Stage.ORCHESTRATE,
        at=AT,
        payload=RunAccepted(pipeline="p", tenant="acme"),
    )
    v5 = SchemaCatalog.default().history(RunEvent.avro_name)[4]
    datum = to_datum(event)
    kind, payload = datum["payload"]
    datum["payload"] = (kind, {k: v for k, v in payload.items() if k != "tenant"})
    data = AvroSerde(SchemaCatalog([v5])).encode_record(RunEvent.avro_name, datum)
    old = AvroSerde().decode(data, RunEvent).payload_as(RunAccepted)
    assert old is not None and old.tenant is None and old.pipeline == "p"
    serde = AvroSerde()
    current = serde.decode(serde.encode(event), RunEvent).payload_as(RunAccepted)
    assert current is not None and current.tenant == "acme"
