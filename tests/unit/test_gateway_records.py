"""A tenant's records at the REST door, in process over a fake bus: ``GET /runs`` (filtered, paginated),
``GET /runs/{id}`` with its result, ``GET /alerts`` and ``GET /dead-letters`` answer the caller's tenant's
records only, whatever its role; another tenant's are not found or simply absent from the lists. The
gateway's views are fed as its bus feeds them (the records' topics decoded by ``KafkaBus._apply``), with
keys of two tenants (``acme`` and ``globex``) from ``gateway_support``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.bus import KafkaBus
from services.gateway.core import Gateway
from services.gateway.follower import apply_record
from shared.auth.keys import issue_key
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
    PipelineRequest,
    PipelineResult,
    RequestAction,
    Role,
    RunAccepted,
    RunEvent,
    RunStatus,
    Severity,
    Stage,
)
from shared.spec import parse_spec
from tests.unit.gateway_support import (
    ADMIN,
    OPERATOR,
    OTHER_ADMIN,
    TENANT,
    VIEWER,
    FakeBus,
    bearer,
    make_gateway,
)

pytestmark = pytest.mark.unit

OTHER = OTHER_ADMIN.record.tenant
OTHER_VIEWER = issue_key(OTHER, Role.VIEWER, created_by="test")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = parse_spec(
    {"name": "orders", "source": {"type": "event"}, "destination": {"type": "jsonl", "path": "/tmp/orders"}}
)


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    gateway = make_gateway(bus, records_per_tenant=3)
    gateway.keys.apply(OTHER_VIEWER.key_id, OTHER_VIEWER.record)
    return gateway


@pytest.fixture
def follower(gateway: Gateway) -> KafkaBus:
    """The bus's follower over the gateway's own views: ``feed`` hands it records as Kafka would."""
    return KafkaBus(
        gateway.settings,
        AvroSerde(),
        ledger=gateway.ledger,
        catalog=gateway.catalog,
        runs=gateway.runs,
        keys=gateway.keys,
        deliveries=gateway.deliveries,
        records=gateway.records,
    )


def feed(follower: KafkaBus, topic: str, value: Contract, key: str = "k") -> None:
    record: Any = SimpleNamespace(key=key.encode(), value=follower.serde.encode(value), partition=0, offset=0)
    apply_record(follower, topic, record)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def request(run_id: str, tenant: str, minutes: int = 0) -> PipelineRequest:
    return PipelineRequest(
        run_id=run_id, spec=SPEC, tenant=tenant, submitted_at=T0 + timedelta(minutes=minutes)
    )


def result(run_id: str, tenant: str, status: RunStatus = RunStatus.FAILED) -> PipelineResult:
    errors = [ErrorInfo(error_class="CastError", message="column amount: not a number")]
    return PipelineResult(
        run_id=run_id,
        request_id="q",
        pipeline="orders",
        tenant=tenant,
        status=status,
        started_at=T0,
        finished_at=T0,
        errors=errors,
    )


def alert(run_id: str | None, tenant: str = DEFAULT_TENANT, minutes: int = 0) -> Alert:
    return Alert(
        kind=AlertKind.RUN_FAILED if run_id else AlertKind.DEAD_LETTER_GROWTH,
        severity=Severity.CRITICAL,
        message=f"run {run_id} failed",
        at=T0 + timedelta(minutes=minutes),
        run_id=run_id,
        tenant=tenant,
    )


def letter(run_id: str | None, tenant: str | None = None, minutes: int = 0) -> DeadLetter:
    return DeadLetter(
        origin=Origin(topic="aoetl.tasks", partition=1, offset=minutes, key=b"\xffk"),
        stage=Stage.EXTRACT,
        error=ErrorInfo(error_class="CastError", message="not a number"),
        at=T0 + timedelta(minutes=minutes),
        run_id=run_id,
        tenant=tenant,
        payload=b"\x00\xff" * 10,
    )


async def get(client: httpx.AsyncClient, path: str, key: Any) -> Any:
    answer = await client.get(path, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return answer.json()


# --------------------------------------------------------------------------------------------- runs
async def test_a_tenants_runs_are_listed_to_it_alone_filtered_and_paginated(
    client: httpx.AsyncClient, follower: KafkaBus, gateway: Gateway
) -> None:
    t = gateway.topics
    for n in range(3):
        feed(follower, t.requests, request(f"a{n}", TENANT, minutes=n))
    feed(follower, t.requests, request("g0", OTHER, minutes=9))
    feed(follower, t.results, result("a1", TENANT, RunStatus.COMPLETED))

    page = await get(client, "/runs", VIEWER)
    assert [r["run_id"] for r in page["runs"]] == ["a2", "a1", "a0"] and page["total"] == 3
    assert [r["run_id"] for r in (await get(client, "/runs?limit=2&offset=1", VIEWER))["runs"]] == [
        "a1",
        "a0",
    ]
    done = await get(client, "/runs?status=COMPLETED&pipeline=orders", VIEWER)
    assert [r["run_id"] for r in done["runs"]] == ["a1"]
    assert (await get(client, "/runs?pipeline=other", VIEWER))["runs"] == []
    assert [r["run_id"] for r in (await get(client, "/runs", OTHER_VIEWER))["runs"]] == ["g0"]
    # an admin of another tenant sees no more than its own tenant's viewer
    assert [r["run_id"] for r in (await get(client, "/runs", OTHER_ADMIN))["runs"]] == ["g0"]


async def test_a_run_answers_with_its_result_to_its_tenant_only(
    client: httpx.AsyncClient, follower: KafkaBus, gateway: Gateway
) -> None:
    feed(follower, gateway.topics.requests, request("a1", TENANT))
    feed(follower, gateway.topics.results, result("a1", TENANT))
    view = await get(client, "/runs/a1", VIEWER)
    assert view["status"] == "FAILED" and view["result"]["tenant"] == TENANT
    assert view["result"]["errors"][0]["error_class"] == "CastError"
    for key in (OTHER_VIEWER, OTHER_ADMIN):
        assert (await client.get("/runs/a1", headers=bearer(key))).status_code == 404


async def test_a_result_alone_gives_nobody_the_run(
    client: httpx.AsyncClient, follower: KafkaBus, gateway: Gateway
) -> None:
    """A result whose request was not read names a tenant, but a result written before v2 says
    ``default`` for every tenant's run: the run's tenant comes from its request (or RUN_ACCEPTED) only."""
    feed(follower, gateway.topics.results, result("lone", DEFAULT_TENANT))
    default_viewer = issue_key(DEFAULT_TENANT, Role.VIEWER, created_by="test")
    gateway.keys.apply(default_viewer.key_id, default_viewer.record)
    assert (await client.get("/runs/lone", headers=bearer(default_viewer))).status_code == 404
    accepted = RunEvent(
        run_id="lone",
        kind=EventKind.RUN_ACCEPTED,
        stage=Stage.ORCHESTRATE,
        payload=RunAccepted(pipeline="orders", tenant=TENANT),
    )
    feed(follower, gateway.topics.events, accepted)  # RunEvent v6 names the run's tenant
    assert (await get(client, "/runs/lone", VIEWER))["result"]["run_id"] == "lone"
    assert (await client.get("/runs/lone", headers=bearer(default_viewer))).status_code == 404


# ------------------------------------------------------------------------------------------- alerts
async def test_alerts_are_their_runs_tenants_and_listed_to_it_alone(
    client: httpx.AsyncClient, follower: KafkaBus, gateway: Gateway
) -> None:
    t = gateway.topics
    feed(follower, t.requests, request("a1", TENANT))
    failed = alert("a1", TENANT, minutes=1)
    feed(follower, t.alerts, failed)
    feed(follower, t.alerts, failed)  # read twice (after a reconnect): kept once
    # written before Alert v2 (tenant 'default'), of a run the gateway knows: the run's tenant decides
    feed(
        follower,
        t.alerts,
        alert("a1", DEFAULT_TENANT, minutes=2).model_copy(update={"kind": AlertKind.RUN_STUCK}),
    )
    feed(follower, t.alerts, alert("g1", OTHER))
    feed(follower, t.alerts, alert(None, DEFAULT_TENANT))  # the whole system's: the default tenant's

    mine = await get(client, "/alerts", VIEWER)
    assert [(a["run_id"], a["kind"]) for a in mine["alerts"]] == [("a1", "RUN_STUCK"), ("a1", "RUN_FAILED")]
    assert [a["run_id"] for a in (await get(client, "/alerts?kind=RUN_FAILED", VIEWER))["alerts"]] == ["a1"]
    for key in (OTHER_VIEWER, OTHER_ADMIN):
        assert [a["run_id"] for a in (await get(client, "/alerts", key))["alerts"]] == ["g1"]
        assert (await get(client, "/alerts?run_id=a1", key))["alerts"] == []


# ------------------------------------------------------------------------------------- dead letters
async def test_dead_letters_are_resolved_through_their_run_and_listed_to_its_tenant_alone(
    client: httpx.AsyncClient, follower: KafkaBus, gateway: Gateway
) -> None:
    t = gateway.topics
    feed(follower, t.dead_letters, letter("a1", minutes=1))  # a task's letter: no tenant, its run unknown yet
    feed(follower, t.dead_letters, letter(None, tenant=OTHER, minutes=2))  # a topic trigger's: carried
    feed(follower, t.dead_letters, letter(None, minutes=3))  # neither: nobody's
    assert (await get(client, "/dead-letters", VIEWER))["dead_letters"] == []

    feed(follower, t.requests, request("a1", TENANT))  # the request is read after the letter
    [mine] = (await get(client, "/dead-letters", VIEWER))["dead_letters"]
    assert (mine["run_id"], mine["tenant"], mine["payload_bytes"]) == ("a1", TENANT, 20)
    assert mine["origin"]["key_base64"] == "/2s=" and "payload" not in mine
    for key in (OTHER_VIEWER, OTHER_ADMIN):
        [theirs] = (await get(client, "/dead-letters", key))["dead_letters"]
        assert theirs["tenant"] == OTHER and theirs["run_id"] is None
        assert (await get(client, "/dead-letters?run_id=a1", key))["dead_letters"] == []


async def test_a_tenants_flood_of_dead_letters_keeps_its_newest_and_pushes_out_no_other_tenants(
    client: httpx.AsyncClient, follower: KafkaBus, gateway: Gateway
) -> None:
    t = gateway.topics
    feed(follower, t.requests, request("a1", TENANT))
    feed(follower, t.requests, request("g1", OTHER))
    feed(follower, t.dead_letters, letter("g1", minutes=0))
    for n in range(1, 6):
        feed(follower, t.dead_letters, letter("a1", minutes=n))
    kept = (await get(client, "/dead-letters", VIEWER))["dead_letters"]
    assert [d["origin"]["offset"] for d in kept] == [5, 4, 3]  # records_per_tenant=3
    assert [d["run_id"] for d in (await get(client, "/dead-letters", OTHER_VIEWER))["dead_letters"]] == ["g1"]


# --------------------------------------------------------------------------------------------- roles
async def test_a_viewer_reads_but_cannot_submit_replay_or_stop(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    gateway.runs.on_request(request("a1", TENANT))
    for answer in (
        await client.post("/runs", json={"spec": SPEC.model_dump(mode="json")}, headers=bearer(VIEWER)),
        await client.post(
            "/runs", json={"definition": "orders"}, headers={**bearer(VIEWER), "Idempotency-Key": "again"}
        ),
        await client.post("/runs/a1/stop", headers=bearer(VIEWER)),
    ):
        assert answer.status_code == 403, answer.text
    assert bus.requests() == []
    stopped = await client.post("/runs/a1/stop", headers=bearer(OPERATOR))
    assert stopped.status_code == 202 and bus.requests()[-1].action is RequestAction.STOP
    for path in ("/runs", "/alerts", "/dead-letters"):
        assert (await client.get(path, headers=bearer(ADMIN))).status_code == 200
        assert (await client.get(path)).status_code == 401


async def test_the_lists_wait_until_the_gateway_has_caught_up(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    bus.ready = False
    for path in ("/runs", "/alerts", "/dead-letters"):
        assert (await client.get(path, headers=bearer(VIEWER))).status_code == 503
