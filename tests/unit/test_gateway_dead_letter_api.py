"""``GET /dead-letters/{id}``, ``POST /dead-letters/{id}/replay`` and ``GET /results`` on the in-process
gateway with the fake bus: the detail and its payload, another tenant's letter 404, one past retention 410,
replay by role with its ``dlq.replay`` audit record, a dry run that writes nothing, the console's button on
the same path; results tenant-scoped, paged by cursor, a result whose run is not known yet waited for
(bounded), never shown to another tenant."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.core import Gateway
from shared.contracts import (
    AuditOutcome,
    DeadLetter,
    ErrorInfo,
    Origin,
    PipelineRequest,
    PipelineResult,
    RunStatus,
    Stage,
)
from shared.dead_letters import REDRIVE_HEADER
from shared.kafka.topics import Topics
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

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = parse_spec(
    {"name": "orders", "source": {"type": "event"}, "destination": {"type": "jsonl", "path": "/o"}}
)
KEY = b"\xff\xfebatch"  # not UTF-8: shown as base64, never decoded


def add_run(gateway: Gateway, run_id: str, tenant: str) -> None:
    gateway.runs.on_request(PipelineRequest(run_id=run_id, spec=SPEC, tenant=tenant, submitted_at=T0))


def add_letter(
    gateway: Gateway, bus: FakeBus, run_id: str, letter_id: str, *, kept: bool = True
) -> DeadLetter:
    letter = DeadLetter(
        dead_letter_id=letter_id,
        origin=Origin(topic=gateway.settings.topic(Topics.DATA_TRANSFORMED), partition=2, offset=41, key=KEY),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message="bad password=hunter2secret"),
        run_id=run_id,
        payload=b"the original batch bytes",
    )
    stored = bus.store(gateway.settings.topic(Topics.DEAD_LETTERS), letter)
    gateway.records.on_dead_letter(letter, gateway.runs.tenant_of, (stored.partition, stored.offset))
    if not kept:  # retention removed the record; the view still lists the letter
        del bus.stored[stored]
    return letter


def result(run_id: str, tenant: str = "default", started: datetime = T0) -> PipelineResult:
    return PipelineResult(
        run_id=run_id,
        request_id="q",
        pipeline="orders",
        tenant=tenant,
        status=RunStatus.COMPLETED,
        started_at=started,
        finished_at=started,
    )


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    gateway = make_gateway(bus, results_tenant_grace_s=0.5)
    add_run(gateway, "acme-run", TENANT)
    add_run(gateway, "globex-run", "globex")
    add_letter(gateway, bus, "acme-run", "acme-letter")
    add_letter(gateway, bus, "globex-run", "globex-letter")
    add_letter(gateway, bus, "acme-run", "gone-letter", kept=False)
    return gateway


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


async def test_a_viewer_reads_its_letter_in_full_and_nothing_of_another_tenants(
    client: httpx.AsyncClient,
) -> None:
    shown = await client.get("/dead-letters/acme-letter", headers=bearer(VIEWER))
    assert shown.status_code == 200, shown.text
    detail = shown.json()
    assert base64.b64decode(detail["payload_base64"]) == b"the original batch bytes"
    assert detail["origin"]["key_base64"] == base64.b64encode(KEY).decode()
    assert (detail["origin"]["partition"], detail["origin"]["offset"], detail["stage"]) == (2, 41, "load")
    assert detail["payload_format"] == "raw" and detail["at"] and detail["tenant"] == TENANT
    assert "hunter2secret" not in shown.text  # the error's text is redacted
    other = await client.get("/dead-letters/globex-letter", headers=bearer(VIEWER))
    unknown = await client.get("/dead-letters/no-such", headers=bearer(VIEWER))
    assert other.status_code == unknown.status_code == 404  # answered as if it did not exist
    assert other.json()["detail"] == unknown.json()["detail"].replace("no-such", "globex-letter")
    assert (await client.get("/dead-letters/globex-letter", headers=bearer(OTHER_ADMIN))).status_code == 200
    gone = await client.get("/dead-letters/gone-letter", headers=bearer(VIEWER))
    assert gone.status_code == 410 and "retention" in gone.text


async def test_a_dry_run_says_where_and_writes_nothing(client: httpx.AsyncClient, bus: FakeBus) -> None:
    planned = await client.post("/dead-letters/acme-letter/replay?dry_run=true", headers=bearer(OPERATOR))
    assert planned.status_code == 200, planned.text
    answer = planned.json()
    assert answer["dry_run"] is True and answer["topic"].startswith("aoetl.data.transformed")
    assert (answer["partition"], answer["offset"], answer["payload_bytes"]) == (None, None, 24)
    assert bus.raw == [] and bus.published == []  # not even an audit record: nothing changed
    refused = await client.post("/dead-letters/gone-letter/replay?dry_run=true", headers=bearer(OPERATOR))
    assert refused.status_code == 410 and bus.published == []


async def test_a_replay_is_the_operators_audited_and_re_drives_the_original_bytes(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    denied = await client.post("/dead-letters/acme-letter/replay", headers=bearer(VIEWER))
    assert denied.status_code == 403 and bus.raw == []
    assert [(a.action, a.outcome) for a in bus.audits()] == [("dlq.replay", AuditOutcome.DENIED)]
    other = await client.post("/dead-letters/globex-letter/replay", headers=bearer(OPERATOR))
    assert other.status_code == 404 and bus.raw == []
    replayed = await client.post("/dead-letters/acme-letter/replay", headers=bearer(OPERATOR))
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["dry_run"] is False and replayed.json()["offset"] == 0
    [(topic, key, value, headers)] = bus.raw
    assert topic.startswith("aoetl.data.transformed") and key == KEY and value == b"the original batch bytes"
    assert dict(headers)[REDRIVE_HEADER] == b"acme-letter"
    outcomes = [(a.action, a.object, a.outcome) for a in bus.audits()[1:]]
    assert outcomes == [
        ("dlq.replay", "dead-letter/globex-letter", AuditOutcome.REJECTED),
        ("dlq.replay", "dead-letter/acme-letter", AuditOutcome.ALLOWED),
    ]
    gone = await client.post("/dead-letters/gone-letter/replay", headers=bearer(ADMIN))
    assert gone.status_code == 410 and bus.audits()[-1].outcome is AuditOutcome.REJECTED and len(bus.raw) == 1


async def test_the_consoles_button_takes_the_same_path(client: httpx.AsyncClient, bus: FakeBus) -> None:
    pressed = await client.post("/ui/dead-letters/gone-letter/replay", headers=bearer(OPERATOR))
    assert pressed.status_code == 410 and bus.raw == []
    pressed = await client.post("/ui/dead-letters/acme-letter/replay", headers=bearer(OPERATOR))
    assert pressed.status_code == 200 and len(bus.raw) == 1
    assert [a.object for a in bus.audits()] == ["dead-letter/gone-letter", "dead-letter/acme-letter"]


async def test_results_are_the_tenants_only_and_paged_by_cursor(
    client: httpx.AsyncClient, gateway: Gateway, bus: FakeBus
) -> None:
    topic = gateway.settings.topic(Topics.RESULTS)
    for run_id, tenant in (("acme-run", TENANT), ("globex-run", "globex"), ("acme-run", TENANT)):
        bus.store(topic, result(run_id, tenant))
    bus.store(topic, result("globex-run", TENANT), partition=1)  # names acme, but the run is globex's
    first = (await client.get("/results?limit=2", headers=bearer(VIEWER))).json()
    assert [r["run_id"] for r in first["results"]] == ["acme-run"] and first["more"] is True
    assert first["next_cursor"] == "0:2,1:0"
    rest = (await client.get(f"/results?cursor={first['next_cursor']}", headers=bearer(VIEWER))).json()
    assert [r["run_id"] for r in rest["results"]] == ["acme-run"] and rest["more"] is False
    assert rest["next_cursor"] == "0:3,1:1"
    end = (await client.get("/results?cursor=end", headers=bearer(VIEWER))).json()
    assert end == {"results": [], "next_cursor": "0:3,1:1", "more": False}
    assert (await client.get("/results?cursor=0:x", headers=bearer(VIEWER))).status_code == 422
    bus.down = True
    assert (await client.get("/results", headers=bearer(VIEWER))).status_code == 503


async def test_a_result_read_before_its_request_waits_for_it_on_the_view(bus: FakeBus) -> None:
    gateway = make_gateway(bus)  # the default grace, 30 s: the answer must come from being woken
    late = result("late-run", "default", started=datetime.now(UTC))  # the default tenant is not whose it is
    bus.store(gateway.settings.topic(Topics.RESULTS), late)

    async def request_read_later() -> None:
        while "late-run" not in gateway.runs._awaiting:  # the answer is parked on the view
            await asyncio.sleep(0)
        add_run(gateway, "late-run", TENANT)  # then the follower reads the run's request

    started = asyncio.get_running_loop().time()
    later = asyncio.create_task(request_read_later())
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        answer = (await client.get("/results", headers=bearer(VIEWER))).json()
    await later
    waited = asyncio.get_running_loop().time() - started
    assert [r["run_id"] for r in answer["results"]] == ["late-run"] and waited < 10  # woken, not timed out
    assert gateway.runs._awaiting == {}


async def test_a_result_whose_run_stays_unknown_goes_to_the_tenant_it_names_after_the_grace(
    client: httpx.AsyncClient, gateway: Gateway, bus: FakeBus
) -> None:
    topic = gateway.settings.topic(Topics.RESULTS)
    bus.store(topic, result("lost-run", TENANT, started=datetime.now(UTC)))  # its request not read (yet)
    bus.store(topic, result("lost-run-2", "globex", started=datetime.now(UTC)))
    started = asyncio.get_running_loop().time()
    answer = (await client.get("/results", headers=bearer(VIEWER))).json()
    waited = asyncio.get_running_loop().time() - started
    assert [r["run_id"] for r in answer["results"]] == ["lost-run"]
    assert 0.4 < waited < 3  # one grace of 0.5 s for the whole request, not one per record


async def test_a_run_older_than_the_gateway_reads_back_is_not_waited_for(
    client: httpx.AsyncClient, gateway: Gateway, bus: FakeBus
) -> None:
    bus.store(gateway.settings.topic(Topics.RESULTS), result("old-run", TENANT))  # started a year ago
    started = asyncio.get_running_loop().time()
    answer = (await client.get("/results", headers=bearer(VIEWER))).json()
    assert [r["run_id"] for r in answer["results"]] == ["old-run"]
    assert asyncio.get_running_loop().time() - started < 0.4  # its request will never be read: no grace
