"""The HTTP API in process (httpx ASGI transport) over a fake bus: status codes, deduplication, trigger rules,
definitions and runs. The real broker is exercised by ``tests/integration/test_gateway.py``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.configuration import GatewaySettings
from services.gateway.core import Gateway
from shared.contracts import (
    AuditOutcome,
    BatchLoaded,
    EventKind,
    PipelineDefinition,
    PipelineResult,
    RunEvent,
    RunFinished,
    RunPlanned,
    RunStatus,
    Split,
    SplitKind,
    Stage,
    TriggerKind,
)
from tests.unit.gateway_support import (
    ADMIN,
    GITHUB_SECRET,
    PLAIN_SECRET,
    STRIPE_SECRET,
    FakeBus,
    bearer,
    make_gateway,
    make_settings,
)

pytestmark = pytest.mark.unit
__all__ = ["FakeBus", "make_settings"]  # imported from here by older tests

SPEC: dict[str, Any] = {
    "name": "repo-sync",
    "source": {"type": "event", "records_path": "commits"},
    "destination": {"type": "jsonl", "path": "/tmp/out.jsonl"},
}


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    return make_gateway(bus)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's client: every API call carries the admin key (webhooks ignore it)."""
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=bearer(ADMIN)) as c:
        yield c


def github(
    body: bytes, delivery: str = "d-1", event: str = "push", secret: str = GITHUB_SECRET
) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "Content-Type": "application/json",
    }


PUSH = json.dumps(
    {"ref": "refs/heads/main", "size": 2, "head_commit": {"id": "abc"}, "repository": {"full_name": "o/r"}}
).encode()


# ------------------------------------------------------------------------------------------ webhooks
async def test_good_delivery_publishes_one_request_per_matching_definition(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    response = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["duplicate"] is False and [r["definition"] for r in answer["runs"]] == [
        "repo-sync",
        "audit",
    ]
    requests = bus.requests()
    assert [r.definition_name for r in requests] == ["repo-sync", "audit"]
    first = requests[0]
    assert first.run_id == answer["run_id"]
    assert first.parameters == {"commit": "abc", "repo": "o/r", "n": "2"}
    assert first.payload == PUSH
    assert (first.trigger.kind, first.trigger.source, first.trigger.delivery_id) == (
        TriggerKind.WEBHOOK,
        "github",
        "d-1",
    )
    assert [key for key, _ in bus.on("aoetl.requests.unit")] == [r.run_id for r in requests]


async def test_replay_returns_the_same_run_ids_and_publishes_nothing(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    first = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH))
    replay = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH))
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True
    assert replay.json()["runs"] == [{**r, "duplicate": True} for r in first.json()["runs"]]
    assert len(bus.requests()) == 2
    # GitHub signs the body only: the same body under a new delivery id is the same delivery, replayed
    renamed = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, delivery="d-2"))
    assert renamed.status_code == 200 and renamed.json()["runs"] == replay.json()["runs"]
    assert len(bus.requests()) == 2
    other_body = PUSH.replace(b'"abc"', b'"abd"')
    other = await client.post("/webhooks/github", content=other_body, headers=github(other_body, "d-2"))
    assert other.status_code == 202 and other.json()["run_id"] != first.json()["run_id"]


async def test_concurrent_copies_of_one_delivery_publish_once(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    bus.gate = asyncio.Event()
    posts = [
        asyncio.create_task(client.post("/webhooks/github", content=PUSH, headers=github(PUSH)))
        for _ in range(5)
    ]
    # hold the first send until the four other copies are parked behind it in the replay memory
    deadline = time.monotonic() + 10
    while gateway.deliveries.waiting < 4:
        assert time.monotonic() < deadline, "copies never reached the replay memory"
        await asyncio.sleep(0)  # a bare yield to the loop, not a timed wait
    bus.gate.set()
    answers = await asyncio.gather(*posts)
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202]
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert len(bus.requests()) == 2


async def test_kafka_down_answers_503_then_the_retry_publishes(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    bus.down = True
    response = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert bus.published == []
    bus.down = False
    retry = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH))
    assert retry.status_code == 202 and retry.json()["duplicate"] is False


async def test_not_caught_up_answers_503(client: httpx.AsyncClient, bus: FakeBus) -> None:
    bus.ready = False
    response = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH))
    assert response.status_code == 503
    assert (await client.get("/ready")).status_code == 503
    assert bus.published == []


async def test_rejections_publish_nothing(client: httpx.AsyncClient, bus: FakeBus) -> None:
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("nope", PUSH, github(PUSH), 404),
        ("github", PUSH, github(PUSH, secret="wrong"), 401),
        ("github", PUSH, {k: v for k, v in github(PUSH).items() if k != "X-Hub-Signature-256"}, 401),
        ("github", b"{not json", github(b"{not json"), 400),
        ("github", PUSH, {k: v for k, v in github(PUSH).items() if k != "X-GitHub-Delivery"}, 400),
        ("github", b"x" * 5000, github(b"x" * 5000), 413),
    ]
    for source, body, headers, status in cases:
        response = await client.post(f"/webhooks/{source}", content=body, headers=headers)
        assert response.status_code == status, (source, status, response.text)
    assert bus.published == []


async def test_streamed_body_over_the_limit_is_refused_without_content_length(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"x" * 1000

    headers = github(b"irrelevant")
    response = await client.post("/webhooks/github", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert bus.published == []


async def test_unmatched_event_is_acknowledged_without_a_run(client: httpx.AsyncClient, bus: FakeBus) -> None:
    ping = b'{"zen": "Design for failure."}'
    response = await client.post("/webhooks/github", content=ping, headers=github(ping, event="ping"))
    assert response.status_code == 200
    assert response.json() == {
        "source": "github",
        "delivery_id": "d-1",
        "event": "ping",
        "duplicate": False,
        "run_id": None,
        "runs": [],
    }
    other_branch = PUSH.replace(b"refs/heads/main", b"refs/heads/dev")
    response = await client.post(
        "/webhooks/github", content=other_branch, headers=github(other_branch, "d-3")
    )
    assert [r["definition"] for r in response.json()["runs"]] == ["audit"]  # the 'where' filter held back one


async def test_stripe_delivery_id_and_type_come_from_the_body(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    body = b'{"id": "evt_42", "type": "invoice.paid", "data": {}}'
    t = int(time.time())
    v1 = hmac.new(STRIPE_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    response = await client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": f"t={t},v1={v1}"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["delivery_id"] == "evt_42"
    assert bus.requests()[0].definition_name == "billing"
    stale_t = t - 3600
    v1 = hmac.new(STRIPE_SECRET.encode(), f"{stale_t}.".encode() + body, hashlib.sha256).hexdigest()
    stale = await client.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": f"t={stale_t},v1={v1}"}
    )
    assert stale.status_code == 401 and "stale" in stale.json()["detail"]


async def test_standard_webhooks_and_generic_hmac(client: httpx.AsyncClient, bus: FakeBus) -> None:
    body = b'{"type": "user.created", "data": {"id": 1}}'
    t = str(int(time.time()))
    sig = base64.b64encode(
        hmac.new(b"k" * 32, f"msg_7.{t}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    headers = {"webhook-id": "msg_7", "webhook-timestamp": t, "webhook-signature": f"v1,{sig}"}
    response = await client.post("/webhooks/acme", content=body, headers=headers)
    assert response.status_code == 202 and response.json()["event"] == "user.created"
    plain = b'{"a": 1}'
    digest = hmac.new(PLAIN_SECRET.encode(), plain, hashlib.sha256).hexdigest()
    headers = {"X-Plain-Sig": digest, "X-Delivery-Id": "p-1", "X-Event-Type": "thing"}
    response = await client.post("/webhooks/plain", content=plain, headers=headers)
    assert response.status_code == 202 and response.json()["runs"][0]["definition"] == "plain"
    assert [r.trigger.delivery_id for r in bus.requests()] == ["msg_7", "p-1"]


# --------------------------------------------------------------------------------------- definitions
async def test_definitions_crud(client: httpx.AsyncClient, bus: FakeBus) -> None:
    created = await client.put("/definitions/repo-sync", json=SPEC, headers={"X-Aoetl-User": "ana"})
    assert created.status_code == 201, created.text
    # the principal comes from the key, not from the header (which is ignored)
    assert created.json()["version"] == 1 and created.json()["updated_by"] == f"key:{ADMIN.key_id}@acme"
    same = await client.put("/definitions/repo-sync", json=SPEC)
    assert same.status_code == 200 and same.json()["version"] == 1  # unchanged: nothing published
    changed = await client.put("/definitions/repo-sync", json={**SPEC, "description": "v2"})
    assert changed.json()["version"] == 2
    listed = await client.get("/definitions")
    assert [d["name"] for d in listed.json()] == ["repo-sync"]
    assert (await client.get("/definitions/repo-sync")).json()["spec"]["description"] == "v2"
    assert (await client.delete("/definitions/repo-sync")).status_code == 204
    assert (await client.get("/definitions/repo-sync")).status_code == 404
    assert (await client.delete("/definitions/repo-sync")).status_code == 404
    kinds = [(topic, key, type(v).__name__) for topic, key, v in bus.actions()]
    assert kinds == [
        ("aoetl.definitions.unit", "repo-sync", "PipelineDefinition"),
        ("aoetl.definitions.unit", "repo-sync", "PipelineDefinition"),
        ("aoetl.definitions.unit", "repo-sync", "NoneType"),
    ]


async def test_invalid_spec_gets_422_with_field_paths(client: httpx.AsyncClient, bus: FakeBus) -> None:
    bad = {**SPEC, "source": {"type": "csv"}, "run": {"batch_rows": 0}}
    response = await client.put("/definitions/repo-sync", json=bad)
    assert response.status_code == 422
    paths = {issue["path"]: issue["reason"] for issue in response.json()["detail"]}
    assert "source.csv.path" in paths and "run.batch_rows" in paths
    mismatch = await client.put("/definitions/other-name", json=SPEC)
    assert mismatch.status_code == 422 and mismatch.json()["detail"][0]["path"] == "name"
    assert bus.actions() == []
    assert [a.outcome for a in bus.audits()] == [AuditOutcome.REJECTED, AuditOutcome.REJECTED]


async def test_a_definition_the_spec_policy_refuses_gets_422_and_is_not_published(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    attacks = {
        "source.csv.path": {**SPEC, "source": {"type": "csv", "path": "/etc/passwd"}},
        "source.postgres.query": {
            **SPEC,
            "source": {"type": "postgres", "query": "SELECT 1 AS a) AS x; DROP TABLE victim; --"},
        },
        "destination.postgres.table": {
            **SPEC,
            "destination": {"type": "postgres", "table": "aoetl.aoetl_ledger", "mode": "replace"},
        },
        "destination.kafka.topic": {**SPEC, "destination": {"type": "kafka", "topic": "aoetl.requests"}},
        "triggers[0].topic": {**SPEC, "triggers": [{"type": "topic", "topic": "aoetl.results"}]},
    }
    # The caller is tenant acme, for whom the default policy declares no connection: a PostgreSQL source
    # or destination is refused for that too (``test_gateway_tenants`` covers it on its own).
    also = {
        "source.postgres.query": ["source.connection"],
        "destination.postgres.table": ["destination.connection"],
    }
    for path, document in attacks.items():
        response = await client.put("/definitions/repo-sync", json=document)
        assert response.status_code == 422, (path, response.text)
        assert [issue["path"] for issue in response.json()["detail"]] == [path, *also.get(path, [])]
    assert bus.actions() == []  # nothing but the refusals' audit records
    assert [(a.action, a.outcome) for a in bus.audits()] == [("definitions.put", AuditOutcome.REJECTED)] * 5


async def test_a_definition_naming_a_secret_or_the_metadata_address_gets_422(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    """An http source that would send the Kafka SASL password, or reach the metadata endpoint, is refused
    with the field at fault; nothing is published but the refusals' audit records."""
    stealing = {
        **SPEC,
        "source": {"type": "http", "url": "https://x.example/", "auth_env": "AOETL_KAFKA_SASL_PASSWORD"},
    }
    response = await client.put("/definitions/repo-sync", json=stealing)
    assert response.status_code == 422, response.text
    [issue] = response.json()["detail"]
    assert issue["path"] == "source.auth_env" and "AOETL_KAFKA_SASL_PASSWORD" in issue["reason"]
    metadata = {**SPEC, "source": {"type": "http", "url": "http://169.254.169.254/latest/meta-data/"}}
    response = await client.put("/definitions/repo-sync", json=metadata)
    assert response.status_code == 422 and response.json()["detail"][0]["path"] == "source.url"
    assert bus.actions() == []  # nothing but the refusals' audit records
    assert [(a.action, a.outcome) for a in bus.audits()] == [("definitions.put", AuditOutcome.REJECTED)] * 2


# ---------------------------------------------------------------------------------------------- runs
async def test_submit_run_by_spec_definition_and_idempotency_key(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    inline = await client.post("/runs", json={"spec": SPEC, "payload": {"commits": [{"id": 1}]}})
    assert inline.status_code == 202
    request = bus.requests()[0]
    assert request.spec is not None and request.spec.name == "repo-sync"
    assert request.payload is not None and json.loads(request.payload) == {"commits": [{"id": 1}]}
    assert request.trigger.kind is TriggerKind.API

    unknown = await client.post("/runs", json={"definition": "repo-sync"})
    assert unknown.status_code == 422
    await client.put("/definitions/repo-sync", json=SPEC)
    first = await client.post(
        "/runs",
        json={"definition": "repo-sync", "parameters": {"day": "1"}},
        headers={"Idempotency-Key": "k-1"},
    )
    again = await client.post("/runs", json={"definition": "repo-sync"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert len(bus.requests()) == 2

    neither = await client.post("/runs", json={"parameters": {}})
    both = await client.post("/runs", json={"spec": SPEC, "definition": "repo-sync"})
    invalid = await client.post("/runs", json={"spec": {"name": "x"}})
    assert (neither.status_code, both.status_code, invalid.status_code) == (422, 422, 422)
    assert {i["path"] for i in invalid.json()["detail"]} >= {"spec.source", "spec.destination"}


async def test_run_status_folds_request_events_and_result(
    client: httpx.AsyncClient, gateway: Gateway, bus: FakeBus
) -> None:
    answer = (await client.post("/runs", json={"spec": SPEC})).json()
    run_id = answer["run_id"]
    assert (await client.get(f"/runs/{run_id}")).json()["status"] == "SUBMITTED"
    gateway.runs.on_event(RunEvent(run_id=run_id, kind=EventKind.RUN_ACCEPTED, stage=Stage.ORCHESTRATE))
    gateway.runs.on_event(
        RunEvent(
            run_id=run_id, kind=EventKind.BATCH_LOADED, stage=Stage.LOAD, rows_in=5, rows_out=5, batches=1
        )
    )
    view = (await client.get(f"/runs/{run_id}")).json()
    assert view["status"] == "RUNNING" and view["events"] == 2 and view["stages"]["load"]["rows_out"] == 5
    request = bus.requests()[0]
    result = PipelineResult(
        run_id=run_id,
        request_id=request.request_id,
        pipeline="repo-sync",
        status=RunStatus.COMPLETED,
        started_at=request.submitted_at,
        finished_at=request.submitted_at,
    )
    gateway.runs.on_result(result)
    view = (await client.get(f"/runs/{run_id}")).json()
    assert view["status"] == "COMPLETED" and view["result"]["request_id"] == request.request_id
    assert view["pipeline"] == "repo-sync" and view["trigger"]["kind"] == "api"
    assert (await client.get("/runs/does-not-exist")).status_code == 404


async def test_run_status_counts_a_redelivered_batch_once(
    client: httpx.AsyncClient, gateway: Gateway, bus: FakeBus
) -> None:
    run_id = (await client.post("/runs", json={"spec": SPEC})).json()["run_id"]

    def event(kind: EventKind, stage: Stage, **kw: Any) -> RunEvent:
        return RunEvent(run_id=run_id, kind=kind, stage=stage, **kw)

    split = Split(kind=SplitKind.EVENT, index=0, count=1)
    gateway.runs.on_event(event(EventKind.RUN_PLANNED, Stage.ORCHESTRATE, payload=RunPlanned(splits=[split])))
    gateway.runs.on_event(
        event(EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, task_id="t0", batches=1, rows_out=5)
    )
    gateway.runs.on_event(
        event(EventKind.BATCH_TRANSFORMED, Stage.TRANSFORM, batch_id="t0:0", rows_in=5, rows_out=5)
    )
    loaded = event(
        EventKind.BATCH_LOADED,
        Stage.LOAD,
        batch_id="t0:0",
        rows_in=5,
        rows_out=5,
        duration_ms=9,
        payload=BatchLoaded(applied=True, bytes=321),
    )
    gateway.runs.on_event(loaded)
    # load's redelivery of the same batch: the sink had applied it, and says so
    again = loaded.model_copy(
        update={"event_id": "again", "duration_ms": 0, "payload": BatchLoaded(applied=False)}
    )
    gateway.runs.on_event(again)
    view = (await client.get(f"/runs/{run_id}")).json()
    assert view["events"] == 5 and view["last_event"] == "BATCH_LOADED"
    assert view["stages"]["load"] == {
        "rows_in": 5,
        "rows_out": 5,
        "rows_rejected": 0,
        "batches": 1,
        "duration_ms": 9,
    }
    assert view["stages"]["extract"]["batches"] == 1 and view["stages"]["transform"]["rows_out"] == 5
    assert (view["splits_planned"], view["splits_extracted"]) == (1, 1)
    assert view["bytes_loaded"] == 321  # the redelivery counted once
    gateway.runs.on_event(
        event(EventKind.RUN_FINISHED, Stage.ORCHESTRATE, payload=RunFinished(status=RunStatus.COMPLETED))
    )
    gateway.runs.on_event(again.model_copy(update={"event_id": "late"}))  # after the end: changes nothing
    view = (await client.get(f"/runs/{run_id}")).json()
    assert view["status"] == "COMPLETED" and view["stages"]["load"]["batches"] == 1


async def test_probes_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"ready": True, "checks": {"kafka": True, "api_keys": True}}
    metrics = await client.get("/metrics")
    assert "aoetl_gateway_webhooks_total" in metrics.text
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/webhooks/{source}", "/definitions", "/definitions/{name}", "/runs", "/runs/{run_id}"} <= set(
        paths
    )


def test_settings_from_a_config_file(tmp_path: Any) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "webhooks:\n  github: {scheme: github, secrets: [alpha-secret-0001, beta-secret-00002]}\n"
        "triggers:\n  - {source: github, event: push, definition: repo-sync}\n"
    )
    settings = GatewaySettings(gateway_config=config)
    assert settings.webhooks["github"].secret_values() == ["alpha-secret-0001", "beta-secret-00002"]
    assert "secret-0001" not in json.dumps(settings.redacted())  # secrets never reach the logs
    with pytest.raises(ValueError, match="unknown webhook sources: nope"):
        GatewaySettings(triggers=[{"source": "nope", "definition": "x"}])
    with pytest.raises(ValueError, match="whsec_"):
        GatewaySettings(webhooks={"s": {"scheme": "standard", "secrets": ["whsec_***"]}})


def test_definition_model_is_what_the_catalog_holds(gateway: Gateway) -> None:
    definition = PipelineDefinition.model_validate({"name": "repo-sync", "spec": SPEC})
    gateway.catalog.apply("repo-sync", definition)
    assert gateway.catalog.next_version("repo-sync") == 2
    gateway.catalog.apply("repo-sync", None)
    assert gateway.catalog.all() == []


@pytest.fixture(autouse=True)
def _no_real_kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # anything reaching for Kafka fails fast
    yield
