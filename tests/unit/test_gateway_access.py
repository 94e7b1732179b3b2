"""Who may call what (``services/gateway/access.py``), in process over a fake bus: the rule table covers
every endpoint, each endpoint refuses a missing or bad token (401) and every role below its own (403),
the attacks of issue 11 fail, and every mutating call leaves its audit record before it is answered."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.gateway.access import DOCS_PATHS, RULES
from services.gateway.app import create_app
from services.gateway.configuration import GatewaySettings
from services.gateway.core import Gateway
from shared.auth.keys import revoke
from shared.auth.roles import role_allows
from shared.contracts import (
    AuditChannel,
    AuditOutcome,
    DeadLetter,
    ErrorInfo,
    Origin,
    PipelineDefinition,
    PipelineRequest,
    RequestAction,
    Role,
    Stage,
)
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.unit.gateway_support import (
    ADMIN,
    KEYS_BY_ROLE,
    OPERATOR,
    OTHER_ADMIN,
    TENANT,
    VIEWER,
    FakeBus,
    bearer,
    make_gateway,
)

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "name": "repo-sync",
    "source": {"type": "event", "records_path": "commits"},
    "destination": {"type": "jsonl", "path": "/tmp/out.jsonl"},
}
RUN_ID = "0123456789abcdef0123456789abcdef"
LETTER_ID = "dead-letter-of-the-run"

# One valid call per endpoint that needs a token: (path, JSON body or None). A new endpoint without an
# example here fails ``test_every_endpoint_has_a_rule_and_an_example``.
EXAMPLES: dict[tuple[str, str], tuple[str, Any]] = {
    ("GET", "/metrics"): ("/metrics", None),
    ("GET", "/definitions"): ("/definitions", None),
    ("GET", "/definitions/{name}"): ("/definitions/repo-sync", None),
    ("PUT", "/definitions/{name}"): ("/definitions/repo-sync", SPEC),
    ("DELETE", "/definitions/{name}"): ("/definitions/repo-sync", None),
    ("POST", "/runs"): ("/runs", {"definition": "repo-sync"}),
    ("GET", "/runs"): ("/runs?pipeline=repo-sync", None),
    ("GET", "/runs/{run_id}"): (f"/runs/{RUN_ID}", None),
    ("GET", "/alerts"): (f"/alerts?run_id={RUN_ID}", None),
    ("GET", "/dead-letters"): ("/dead-letters", None),
    ("GET", "/dead-letters/{dead_letter_id}"): (f"/dead-letters/{LETTER_ID}", None),
    ("POST", "/dead-letters/{dead_letter_id}/replay"): (f"/dead-letters/{LETTER_ID}/replay", None),
    ("GET", "/results"): ("/results?cursor=0:0", None),
    ("POST", "/runs/{run_id}/stop"): (f"/runs/{RUN_ID}/stop", None),
    ("GET", "/auth/whoami"): ("/auth/whoami", None),
    ("GET", "/auth/keys"): ("/auth/keys", None),
    ("POST", "/auth/keys"): ("/auth/keys", {"role": "viewer"}),
    ("DELETE", "/auth/keys/{key_id}"): (f"/auth/keys/{VIEWER.key_id}", None),
    ("GET", "/ui/runs"): ("/ui/runs?pipeline=repo-sync", None),
    ("GET", "/ui/runs/{run_id}"): (f"/ui/runs/{RUN_ID}", None),
    ("GET", "/ui/events"): (f"/ui/events?run={RUN_ID}", None),
    ("GET", "/ui/definitions"): ("/ui/definitions", None),
    ("GET", "/ui/streams"): ("/ui/streams", None),
    ("GET", "/ui/alerts"): ("/ui/alerts", None),
    ("POST", "/ui/dead-letters/{dead_letter_id}/replay"): (f"/ui/dead-letters/{LETTER_ID}/replay", None),
}
TOKEN_RULES = sorted(k for k, rule in RULES.items() if rule.needs_token)


def unruled_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Routes of ``app`` that the rule table does not name (each would be refused 403 at run time)."""
    missing = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            missing += [(m, route.path) for m in sorted(route.methods or ()) if (m, route.path) not in RULES]
        elif getattr(route, "path", None) not in DOCS_PATHS:
            missing.append(("*", str(getattr(route, "path", route))))
    return missing


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    gateway = make_gateway(bus)
    seed(gateway)
    return gateway


def seed(gateway: Gateway) -> None:
    """A definition and a run, so every example names something that exists."""
    gateway.catalog.apply(
        "repo-sync", PipelineDefinition(name="repo-sync", spec=parse_spec(SPEC), tenant=TENANT)
    )
    gateway.runs.on_request(PipelineRequest(run_id=RUN_ID, definition_name="repo-sync", tenant=TENANT))
    letter = DeadLetter(
        dead_letter_id=LETTER_ID,
        origin=Origin(topic=gateway.settings.topic(Topics.DATA_TRANSFORMED), partition=0, offset=7),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message="bad"),
        run_id=RUN_ID,
        payload=b"the batch",
    )
    assert isinstance(gateway.bus, FakeBus)
    stored = gateway.bus.store(gateway.settings.topic(Topics.DEAD_LETTERS), letter)
    gateway.records.on_dead_letter(letter, gateway.runs.tenant_of, (stored.partition, stored.offset))


@pytest.fixture
async def anonymous(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


async def call(client: httpx.AsyncClient, key: tuple[str, str], **headers: str) -> httpx.Response:
    method, _ = key
    path, body = EXAMPLES[key]
    return await client.request(method, path, json=body, headers=headers)


# ------------------------------------------------------------------------------------------- the table
def test_every_endpoint_has_a_rule_and_an_example(gateway: Gateway) -> None:
    app = create_app(gateway)
    assert unruled_routes(app) == []
    routes = {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    assert set(RULES) == routes, "a rule for an endpoint that does not exist"
    assert set(EXAMPLES) == set(TOKEN_RULES)
    for rule in RULES.values():
        if rule.action is not None:
            assert rule.needs_token and rule.role is not None


async def test_an_endpoint_added_without_a_rule_is_refused_and_fails_the_table_test(gateway: Gateway) -> None:
    app = create_app(gateway)

    @app.get("/sneaky")
    async def sneaky() -> dict[str, str]:
        return {"open": "sesame"}

    assert unruled_routes(app) == [("GET", "/sneaky")]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        response = await client.get("/sneaky", headers=bearer(ADMIN))
    assert response.status_code == 403 and "no access rule" in response.text


@pytest.mark.parametrize("endpoint", TOKEN_RULES, ids=lambda k: f"{k[0]} {k[1]}")
async def test_no_token_or_a_bad_one_is_401_with_a_bearer_challenge(
    anonymous: httpx.AsyncClient, bus: FakeBus, endpoint: tuple[str, str]
) -> None:
    missing = await call(anonymous, endpoint)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == 'Bearer realm="aoetl"'
    tampered = ADMIN.token[:-1] + ("B" if ADMIN.token.endswith("A") else "A")  # never the key itself
    for token in ("aoetl_0123456789abcdef_" + "x" * 43, tampered, "not-a-key", "e.y.j"):
        bad = await call(anonymous, endpoint, Authorization=f"Bearer {token}")
        assert bad.status_code == 401, (token, bad.text)
        assert bad.headers["www-authenticate"] == 'Bearer realm="aoetl", error="invalid_token"'
        assert token not in bad.text  # a token is never echoed
    basic = await call(anonymous, endpoint, Authorization="Basic YWRtaW46YWRtaW4=")
    assert basic.status_code == 401
    assert bus.published == []  # nothing done, nothing audited for the unauthenticated


@pytest.mark.parametrize("endpoint", TOKEN_RULES, ids=lambda k: f"{k[0]} {k[1]}")
async def test_each_role_below_the_rule_is_403_and_the_rule_s_role_gets_through(
    anonymous: httpx.AsyncClient, bus: FakeBus, endpoint: tuple[str, str]
) -> None:
    rule = RULES[endpoint]
    assert rule.role is not None
    for role, key in KEYS_BY_ROLE.items():
        bus.published.clear()
        response = await call(anonymous, endpoint, **bearer(key))
        if role_allows(role, rule.role):
            assert response.status_code not in (401, 403, 429), (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert bus.actions() == []
            if rule.action is not None:
                [denied] = bus.audits()
                assert (denied.outcome, denied.action, denied.key_id, denied.role) == (
                    AuditOutcome.DENIED,
                    rule.action,
                    key.key_id,
                    role,
                )


@pytest.mark.parametrize(
    "endpoint", [k for k in TOKEN_RULES if RULES[k].action], ids=lambda k: f"{k[0]} {k[1]}"
)
async def test_every_mutating_call_is_audited_before_it_is_answered(
    anonymous: httpx.AsyncClient, bus: FakeBus, endpoint: tuple[str, str]
) -> None:
    response = await call(anonymous, endpoint, **bearer(ADMIN), **{"X-Request-Id": "req-42"})
    assert response.status_code < 300, response.text
    assert response.headers["x-request-id"] == "req-42"
    [record] = bus.audits()
    assert record.outcome is AuditOutcome.ALLOWED and record.action == RULES[endpoint].action
    assert (record.actor, record.key_id, record.tenant, record.role) == (
        f"key:{ADMIN.key_id}",
        ADMIN.key_id,
        TENANT,
        Role.ADMIN,
    )
    assert (record.request_id, record.channel) == ("req-42", AuditChannel.REST)
    topic, key, _ = bus.published[0]
    assert (topic, key) == ("aoetl.audit.unit", TENANT)  # the record comes before the action it allows


@pytest.mark.parametrize(
    "endpoint", [k for k in TOKEN_RULES if RULES[k].action], ids=lambda k: f"{k[0]} {k[1]}"
)
async def test_a_failed_audit_write_fails_the_call_and_nothing_is_done(
    anonymous: httpx.AsyncClient, bus: FakeBus, gateway: Gateway, endpoint: tuple[str, str]
) -> None:
    bus.audit_down = True
    response = await call(anonymous, endpoint, **bearer(ADMIN))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert bus.published == []
    assert gateway.catalog.get("repo-sync") is not None and not gateway.keys.get(VIEWER.key_id).revoked  # type: ignore[union-attr]


async def test_the_audit_of_a_refused_call_says_why_without_the_spec(
    anonymous: httpx.AsyncClient, bus: FakeBus
) -> None:
    secretish = {**SPEC, "source": {"type": "csv", "path": 12345}, "description": "token=hunter2"}
    response = await anonymous.put("/definitions/repo-sync", json=secretish, headers=bearer(ADMIN))
    assert response.status_code == 422
    [record] = bus.audits()
    assert record.outcome is AuditOutcome.REJECTED and record.object == "definition/repo-sync"
    assert record.reason is not None and "source" in record.reason and "hunter2" not in record.reason
    bus.audit_down = True
    assert (
        await anonymous.put("/definitions/repo-sync", json=secretish, headers=bearer(ADMIN))
    ).status_code == 503


# ---------------------------------------------------------------------- the attacks of issue 11, refused
async def test_unauthenticated_submit_and_definition_changes_are_refused(
    anonymous: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    attempts = [
        await anonymous.post("/runs", json={"spec": SPEC}),
        await anonymous.put("/definitions/evil", json={**SPEC, "name": "evil"}),
        await anonymous.delete("/definitions/repo-sync"),
        await anonymous.post(f"/runs/{RUN_ID}/stop"),
    ]
    assert [a.status_code for a in attempts] == [401, 401, 401, 401]
    assert bus.published == [] and gateway.catalog.get("repo-sync") is not None


async def test_a_forged_user_header_grants_nothing(anonymous: httpx.AsyncClient, bus: FakeBus) -> None:
    forged = {"X-Aoetl-User": "admin"}
    assert (await anonymous.put("/definitions/repo-sync", json=SPEC, headers=forged)).status_code == 401
    as_viewer = await anonymous.put("/definitions/repo-sync", json=SPEC, headers=forged | bearer(VIEWER))
    assert as_viewer.status_code == 403
    as_admin = await anonymous.post("/runs", json={"spec": SPEC}, headers=forged | bearer(ADMIN))
    assert as_admin.status_code == 202
    [request] = bus.requests()
    assert request.requested_by == f"key:{ADMIN.key_id}@{TENANT}"


async def test_a_viewer_cannot_submit_or_stop(anonymous: httpx.AsyncClient, bus: FakeBus) -> None:
    assert (await anonymous.post("/runs", json={"spec": SPEC}, headers=bearer(VIEWER))).status_code == 403
    assert (await anonymous.post(f"/runs/{RUN_ID}/stop", headers=bearer(VIEWER))).status_code == 403
    assert bus.requests() == []
    assert [(a.action, a.outcome) for a in bus.audits()] == [
        ("runs.submit", AuditOutcome.DENIED),
        ("runs.stop", AuditOutcome.DENIED),
    ]
    assert (await anonymous.get(f"/runs/{RUN_ID}", headers=bearer(VIEWER))).status_code == 200


async def test_a_revoked_key_is_refused(anonymous: httpx.AsyncClient, gateway: Gateway) -> None:
    assert (await anonymous.get("/definitions", headers=bearer(OPERATOR))).status_code == 200
    gateway.keys.apply(OPERATOR.key_id, revoke(OPERATOR.record, by="test"))
    refused = await anonymous.get("/definitions", headers=bearer(OPERATOR))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


async def test_an_operator_submits_and_stops(anonymous: httpx.AsyncClient, bus: FakeBus) -> None:
    submitted = await anonymous.post("/runs", json={"definition": "repo-sync"}, headers=bearer(OPERATOR))
    assert submitted.status_code == 202
    stopped = await anonymous.post(f"/runs/{RUN_ID}/stop", headers=bearer(OPERATOR))
    assert stopped.status_code == 202
    stop = bus.requests()[-1]
    assert (stop.run_id, stop.action, stop.request_id) == (
        RUN_ID,
        RequestAction.STOP,
        stopped.json()["request_id"],
    )
    unknown = await anonymous.post("/runs/nope/stop", headers=bearer(OPERATOR))
    assert unknown.status_code == 404 and bus.audits()[-1].outcome is AuditOutcome.REJECTED
    assert (
        await anonymous.put("/definitions/repo-sync", json=SPEC, headers=bearer(OPERATOR))
    ).status_code == 403


async def test_a_stale_key_ring_answers_503_not_a_guess(bus: FakeBus) -> None:
    now = [0.0]
    gateway = make_gateway(bus)
    gateway.keys = type(gateway.keys)(5.0, clock=lambda: now[0])
    gateway.keys.apply(ADMIN.key_id, ADMIN.record)
    gateway.keys.confirm_fresh(0.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://g"
    ) as c:
        assert (await c.get("/definitions", headers=bearer(ADMIN))).status_code == 200
        now[0] = 5.01
        stale = await c.get("/definitions", headers=bearer(ADMIN))
        assert stale.status_code == 503 and stale.headers["retry-after"] == "1"
        assert (await c.get("/ready")).json()["checks"]["api_keys"] is False
        gateway.keys.confirm_fresh(5.0)
        assert (await c.get("/definitions", headers=bearer(ADMIN))).status_code == 200


async def test_metrics_need_a_token_unless_a_setting_makes_them_public(bus: FakeBus) -> None:
    for public, status in ((False, 401), (True, 200)):
        app = create_app(make_gateway(bus, metrics_public=public))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
            assert (await c.get("/metrics")).status_code == status
            assert (await c.get("/health")).status_code == 200
            document = (await c.get("/openapi.json")).json()
        assert document["paths"]["/metrics"]["get"]["security"] == ([] if public else [{"bearer": []}])
        assert document["paths"]["/runs"]["post"]["security"] == [{"bearer": []}]
        assert document["paths"]["/health"]["get"]["security"] == []
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# -------------------------------------------------------------------------------------- keys over REST
async def test_an_admin_manages_the_keys_of_its_own_tenant_only(
    anonymous: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    created = await anonymous.post(
        "/auth/keys", json={"role": "operator", "description": "ci"}, headers=bearer(ADMIN)
    )
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    new = created.json()
    assert new["tenant"] == TENANT and new["role"] == "operator" and new["key"].startswith("aoetl_")
    assert "secret_sha256" not in new
    me = await anonymous.get("/auth/whoami", headers=bearer(new["key"]))
    assert me.json() == {
        "subject": f"key:{new['key_id']}",
        "tenant": TENANT,
        "role": "operator",
        "method": "api_key",
        "key_id": new["key_id"],
    }
    listed = (await anonymous.get("/auth/keys", headers=bearer(ADMIN))).json()
    assert {k["key_id"] for k in listed} == {ADMIN.key_id, OPERATOR.key_id, VIEWER.key_id, new["key_id"]}
    assert all("key" not in k and "secret_sha256" not in k for k in listed)
    assert new["key"] not in str(bus.published)  # only its hash was published

    foreign = await anonymous.delete(f"/auth/keys/{OTHER_ADMIN.key_id}", headers=bearer(ADMIN))
    assert foreign.status_code == 404
    elsewhere = await anonymous.post(
        "/auth/keys", json={"role": "admin", "tenant": "globex"}, headers=bearer(ADMIN)
    )
    assert elsewhere.status_code == 403 and bus.audits()[-1].outcome is AuditOutcome.DENIED

    revoked = await anonymous.delete(f"/auth/keys/{new['key_id']}", headers=bearer(ADMIN))
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == f"key:{ADMIN.key_id}"
    assert (await anonymous.get("/auth/whoami", headers=bearer(new["key"]))).status_code == 401
    assert (
        gateway.keys.get(OTHER_ADMIN.key_id) is not None and not gateway.keys.get(OTHER_ADMIN.key_id).revoked
    )  # type: ignore[union-attr]


async def test_keys_cannot_be_created_where_keys_are_not_accepted(bus: FakeBus) -> None:
    gateway = make_gateway(bus, auth_api_keys=False)
    app = create_app(gateway)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        assert (await c.get("/auth/whoami", headers=bearer(ADMIN))).status_code == 401  # keys not accepted
    assert bus.published == []


# ------------------------------------------------------------------------------------ secure by default
def test_a_gateway_on_a_public_address_needs_an_authentication_method() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        GatewaySettings(api_host="0.0.0.0")
    with pytest.raises(ValueError, match="not a loopback address"):
        GatewaySettings(api_host="gateway.example.com")
    assert GatewaySettings(api_host="0.0.0.0", auth_api_keys=True).authenticates
    oidc = {"issuer": "https://id.example", "audience": "aoetl", "jwks_url": "https://id.example/jwks"}
    assert GatewaySettings(api_host="::", oidc=oidc).authenticates
    for loopback in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        assert not GatewaySettings(api_host=loopback).authenticates  # starts, and refuses every API call


def test_the_gateway_process_refuses_to_start_exposed_without_authentication() -> None:
    env = {"AOETL_API_HOST": "0.0.0.0", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PATH": "/usr/bin:/bin"}
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "not a loopback address" in done.stderr and "AOETL_AUTH_API_KEYS" in done.stderr
