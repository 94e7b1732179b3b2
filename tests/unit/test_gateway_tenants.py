"""Tenant isolation at the REST door, in process over a fake bus: what one tenant made (definitions,
runs, the triggers inside its definitions) another tenant's principal can neither see nor change, not even
as an admin, and another tenant's webhook sender cannot start it. Keys of two tenants (``acme``, the
webhook sources' tenant, and ``globex``) come from ``gateway_support``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.core import Gateway
from shared.auth.keys import issue_key
from shared.contracts import (
    DEFAULT_TENANT,
    AuditOutcome,
    EventKind,
    PipelineDefinition,
    Role,
    RunEvent,
    Stage,
)
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
from tests.unit.test_gateway_app import github

pytestmark = pytest.mark.unit

OTHER = OTHER_ADMIN.record.tenant
SPEC = {
    "name": "tagged",
    "source": {"type": "event"},
    "destination": {"type": "jsonl", "path": "/tmp/tagged.jsonl"},
}
ON_TAG = {**SPEC, "triggers": [{"type": "webhook", "source": "github", "event": "create"}]}
TAG = json.dumps({"ref": "v1", "ref_type": "tag"}).encode()


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    return make_gateway(bus, triggers=[])  # only the definitions' own triggers


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


def definitions_published(bus: FakeBus) -> list[PipelineDefinition | None]:
    return [v for t, _, v in bus.actions() if t.startswith("aoetl.definitions")]  # type: ignore[misc]


async def test_another_tenants_definition_is_invisible_and_untouchable(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    created = await client.put("/definitions/tagged", json=SPEC, headers=bearer(ADMIN))
    assert created.status_code == 201 and created.json()["tenant"] == TENANT
    other = bearer(OTHER_ADMIN)

    assert (await client.get("/definitions", headers=other)).json() == []
    assert (await client.get("/definitions/tagged", headers=other)).status_code == 404
    assert (await client.delete("/definitions/tagged", headers=other)).status_code == 404
    taken = await client.put("/definitions/tagged", json={**SPEC, "description": "mine"}, headers=other)
    assert taken.status_code == 409, taken.text
    run = await client.post("/runs", json={"definition": "tagged"}, headers=other)
    assert run.status_code == 422 and "no definition named 'tagged'" in run.text

    assert len(definitions_published(bus)) == 1 and bus.requests() == []
    kept = gateway.catalog.get("tagged")
    assert kept is not None and (kept.tenant, kept.version, kept.spec.description) == (TENANT, 1, None)
    refusals = [
        (a.tenant, a.action, a.outcome) for a in bus.audits() if a.outcome is not AuditOutcome.ALLOWED
    ]
    assert refusals == [
        (OTHER, "definitions.delete", AuditOutcome.REJECTED),
        (OTHER, "definitions.put", AuditOutcome.REJECTED),
        (OTHER, "runs.submit", AuditOutcome.REJECTED),
    ]
    # its own tenant still sees it, down to the least role
    listed = (await client.get("/definitions", headers=bearer(VIEWER))).json()
    assert [d["name"] for d in listed] == ["tagged"]


async def test_a_definition_may_name_only_connections_declared_for_its_tenant(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    """The spec policy is checked for the caller's tenant: the default policy declares the ``default``
    connection (the PostgreSQL DSN) for tenant ``default`` only, so acme's admin may not read through it
    while an admin of ``default`` may."""
    reading = {**SPEC, "source": {"type": "postgres", "query": "SELECT 1 AS a"}}
    refused = await client.put("/definitions/tagged", json=reading, headers=bearer(ADMIN))
    assert refused.status_code == 422, refused.text
    [issue] = refused.json()["detail"]
    assert issue["path"] == "source.connection" and f"tenant {TENANT!r}" in issue["reason"]
    assert definitions_published(bus) == []

    default_admin = issue_key(DEFAULT_TENANT, Role.ADMIN, created_by="test")
    gateway.keys.apply(default_admin.key_id, default_admin.record)
    allowed = await client.put("/definitions/tagged", json=reading, headers=bearer(default_admin))
    assert allowed.status_code == 201, allowed.text
    [definition] = definitions_published(bus)
    assert definition is not None and definition.tenant == DEFAULT_TENANT


async def test_a_run_is_seen_and_stopped_by_its_tenant_only(client: httpx.AsyncClient, bus: FakeBus) -> None:
    submitted = await client.post("/runs", json={"spec": SPEC}, headers=bearer(OPERATOR))
    assert submitted.status_code == 202
    run_id = submitted.json()["run_id"]
    [request] = bus.requests()
    assert request.tenant == TENANT

    other = bearer(OTHER_ADMIN)
    assert (await client.get(f"/runs/{run_id}", headers=other)).status_code == 404
    assert (await client.post(f"/runs/{run_id}/stop", headers=other)).status_code == 404
    assert len(bus.requests()) == 1  # no STOP went out

    seen = await client.get(f"/runs/{run_id}", headers=bearer(VIEWER))
    assert seen.status_code == 200 and seen.json()["tenant"] == TENANT
    stopped = await client.post(f"/runs/{run_id}/stop", headers=bearer(OPERATOR))
    assert stopped.status_code == 202
    assert bus.requests()[-1].tenant == TENANT


async def test_a_run_whose_request_was_not_read_is_nobodys_to_see(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    """Known from its events only (its request is older than the history read), a run has no known
    tenant: it is shown to no one rather than to everyone."""
    gateway.runs.on_event(RunEvent(run_id="orphan", kind=EventKind.RUN_ACCEPTED, stage=Stage.ORCHESTRATE))
    for key in (ADMIN, OTHER_ADMIN):
        assert (await client.get("/runs/orphan", headers=bearer(key))).status_code == 404


async def test_a_tenants_trigger_cannot_match_another_tenants_webhook_source(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    """``github`` is acme's sender: globex's definition with a trigger on it never starts."""
    other = await client.put(
        "/definitions/theirs", json={**ON_TAG, "name": "theirs"}, headers=bearer(OTHER_ADMIN)
    )
    assert other.status_code == 201, other.text
    ignored = await client.post("/webhooks/github", content=TAG, headers=github(TAG, "d-1", "create"))
    assert ignored.status_code == 200 and ignored.json()["runs"] == []
    assert bus.requests() == []

    assert (await client.put("/definitions/tagged", json=ON_TAG, headers=bearer(ADMIN))).status_code == 201
    # another tag: GitHub signs the body only, so the same body again would be the first delivery replayed
    tag_2 = json.dumps({"ref": "v2", "ref_type": "tag"}).encode()
    started = await client.post("/webhooks/github", content=tag_2, headers=github(tag_2, "d-2", "create"))
    assert started.status_code == 202, started.text
    [request] = bus.requests()
    assert (request.definition_name, request.tenant) == ("tagged", TENANT)
    assert (await client.get(f"/runs/{request.run_id}", headers=bearer(VIEWER))).status_code == 200
    assert (await client.get(f"/runs/{request.run_id}", headers=bearer(OTHER_ADMIN))).status_code == 404
