"""Webhook replays and hostile bodies at the gateway, in process over the fake bus: the replay memory
(``services.gateway.deliveries``) decides which copy of a delivery starts its runs, a copy after the replay
window is refused, a claim whose attempt failed is taken over; short secrets stop the settings; hostile
JSON is a 400, never a 500 (unit cases plus a property-based fuzz of the endpoint). The real broker, a
restart and two replicas are in ``tests/integration/test_gateway_replays.py``."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.acceptance import ATTEMPT_SEND_TIMEOUTS, CLOCK_SKEW_S
from services.gateway.app import create_app
from services.gateway.bus import RecordPosition
from services.gateway.configuration import GatewaySettings
from services.gateway.core import Gateway
from services.gateway.deliveries import DeliveryBook
from services.gateway.exceptions import GatewayTransientError
from shared.contracts import DeliveryRun, DeliveryState, PipelineRequest, WebhookDelivery
from shared.errors import ConfigurationError
from shared.settings import load_settings
from shared.webhooks.signatures import sign_hmac, sign_standard, sign_stripe
from tests.unit.gateway_support import (
    GITHUB_SECRET,
    PLAIN_SECRET,
    STD_SECRET,
    STRIPE_SECRET,
    FakeBus,
    make_settings,
)
from tests.unit.test_gateway_app import PUSH, github

pytestmark = pytest.mark.unit

DELIVERIES = "aoetl.deliveries.unit"
BODY_LIMIT = 64 * 1024  # room for the hostile bodies below: they must be refused for what they are


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def gateway(bus: FakeBus) -> Gateway:
    return Gateway.in_memory(make_settings(max_body_bytes=BODY_LIMIT), bus)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


@pytest.fixture(autouse=True)
def _no_real_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")


def delivery_records(bus: FakeBus) -> list[WebhookDelivery]:
    return [v for _, v in bus.on(DELIVERIES) if isinstance(v, WebhookDelivery)]


def github_key(body: bytes) -> str:
    return f"github:sha256:{hashlib.sha256(body).hexdigest()}"


def foreign_claim(key: str, *, age_s: float, state: DeliveryState = DeliveryState.CLAIMED) -> WebhookDelivery:
    """A claim another replica wrote ``age_s`` ago."""
    source, identity = key.split(":", 1)
    return WebhookDelivery(
        source=source,
        identity=identity,
        claim_id="other-replica-claim",
        state=state,
        delivery_id="d-elsewhere",
        event="push",
        first_seen_at=datetime.fromtimestamp(time.time() - age_s, UTC),
        runs=[DeliveryRun(run_id="r-elsewhere", definition="repo-sync", parameters={"commit": "abc"})],
    )


# ------------------------------------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    ("scheme", "short"),
    [
        ("github", ""),
        ("github", "fifteen-bytes!!"),
        ("hmac", "   sixteen-ish  "),  # padding is no key material
        ("stripe", "whsec_"),
        ("stripe", "whsec_0123456789"),  # the public prefix does not count
        ("standard", "whsec_" + base64.b64encode(b"k" * 15).decode()),  # the decoded key counts
    ],
)
def test_empty_or_short_secrets_stop_the_settings_naming_the_source(scheme: str, short: str) -> None:
    good = {"standard": STD_SECRET}.get(scheme, "a-good-secret-of-32-bytes-or-so!")
    # rotated lists too: a good secret next to a short one does not excuse it
    webhooks = {"sender-1": {"scheme": scheme, "secrets": [good, short]}}
    with pytest.raises(ConfigurationError) as refused:
        load_settings(GatewaySettings, webhooks=webhooks)
    message = str(refused.value)
    assert "AOETL_WEBHOOKS" in message and "'sender-1' secret #2" in message and "16 bytes" in message
    if short.strip():
        assert short.strip() not in message  # a secret never reaches an error message
    assert load_settings(GatewaySettings, webhooks={"sender-1": {"scheme": scheme, "secrets": [good]}})


def test_replay_window_and_tolerance_must_fit_the_delivery_memory() -> None:
    webhooks = {"slow": {"scheme": "github", "secrets": [GITHUB_SECRET], "replay_window_s": 7200}}
    with pytest.raises(ConfigurationError, match="slow: replay_window_s and tolerance_s"):
        load_settings(GatewaySettings, webhooks=webhooks, delivery_memory_s=3600)
    with pytest.raises(ConfigurationError, match="AOETL_DELIVERY_MEMORY_S"):
        load_settings(GatewaySettings, delivery_memory_s=31 * 24 * 3600)  # beyond the topic's retention


# ------------------------------------------------------------------------------------------- replays
async def test_a_delivery_is_claimed_then_started_and_its_copies_publish_nothing(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    first = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert first.status_code == 202
    await gateway.deliveries.settle(1.0)  # the STARTED record is written after the answer
    claim, started = delivery_records(bus)
    assert (claim.state, started.state) == (DeliveryState.CLAIMED, DeliveryState.STARTED)
    assert claim.claim_id == started.claim_id and claim.key == github_key(PUSH)
    assert [r.run_id for r in claim.runs] == [r["run_id"] for r in first.json()["runs"]]
    assert claim.runs[0].parameters == {"commit": "abc", "repo": "o/r", "n": "2"}
    # the unsigned headers changed, the signed body did not: the same delivery
    for headers in (github(PUSH, "d-1"), github(PUSH, "d-new"), github(PUSH, "d-1", event="release")):
        copy = await client.post("/webhooks/github", content=PUSH, headers=headers)
        assert copy.status_code == 200 and copy.json()["duplicate"] is True
        assert copy.json()["delivery_id"] == "d-1" and copy.json()["runs"] == [
            {**r, "duplicate": True} for r in first.json()["runs"]
        ]
    assert len(bus.requests()) == 2 and len(delivery_records(bus)) == 2


async def test_stripe_and_standard_retries_are_re_signed_copies(
    client: httpx.AsyncClient, bus: FakeBus
) -> None:
    body = b'{"id": "evt_9", "type": "invoice.paid", "data": {}}'
    first = await client.post("/webhooks/stripe", content=body, headers=sign_stripe(body, STRIPE_SECRET))
    retry = await client.post(
        "/webhooks/stripe",
        content=body,
        headers=sign_stripe(body, STRIPE_SECRET, timestamp=int(time.time()) + 5),
    )
    assert (first.status_code, retry.status_code) == (202, 200) and retry.json()["duplicate"] is True
    std = b'{"type": "user.created"}'
    first = await client.post(
        "/webhooks/acme", content=std, headers=sign_standard(std, STD_SECRET, msg_id="m1")
    )
    retry_headers = sign_standard(std, STD_SECRET, msg_id="m1", timestamp=int(time.time()) - 3)
    retry = await client.post("/webhooks/acme", content=std, headers=retry_headers)
    assert (first.status_code, retry.status_code) == (202, 200)
    assert len(bus.requests()) == 2


async def test_after_the_replay_window_a_copy_is_refused(bus: FakeBus) -> None:
    short_window = make_settings()
    webhooks = {
        name: {**source.model_dump(), "secrets": source.secret_values(), "replay_window_s": 2}
        for name, source in short_window.webhooks.items()
    }
    gateway = Gateway.in_memory(make_settings(webhooks=webhooks), bus)
    old = foreign_claim(github_key(PUSH), age_s=3, state=DeliveryState.STARTED)
    gateway.deliveries.apply(old)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        replay = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-fresh-id"))
        assert replay.status_code == 409 and "replay window (2s)" in replay.json()["detail"]
        plain = b'{"a": 1}'
        headers = {
            **sign_hmac(plain, PLAIN_SECRET, header="X-Plain-Sig"),
            "X-Delivery-Id": "p",
            "X-Event-Type": "thing",
        }
        gateway.deliveries.apply(
            foreign_claim(
                f"plain:sha256:{hashlib.sha256(plain).hexdigest()}", age_s=2.5, state=DeliveryState.STARTED
            )
        )
        assert (await client.post("/webhooks/plain", content=plain, headers=headers)).status_code == 409
    assert bus.published == []


async def test_a_copy_whose_claim_another_replica_won_waits_for_its_start(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    winner = foreign_claim(github_key(PUSH), age_s=0)

    async def the_other_replica_was_first(position: RecordPosition) -> None:
        # the follower reads the other replica's claim before ours, then that replica's STARTED record
        gateway.deliveries.apply(winner)
        bus.before_caught_up = None
        gateway.deliveries.apply(winner.model_copy(update={"state": DeliveryState.STARTED}))

    bus.before_caught_up = the_other_replica_was_first
    answer = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert answer.status_code == 200 and answer.json()["duplicate"] is True
    assert answer.json()["run_id"] == "r-elsewhere" and answer.json()["delivery_id"] == "d-elsewhere"
    assert bus.requests() == []  # our claim lost: we requested nothing
    assert [r.state for r in delivery_records(bus)] == [DeliveryState.CLAIMED]


async def test_an_unfinished_claim_of_another_replica_is_taken_over_after_its_attempt_time(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    attempt_s = ATTEMPT_SEND_TIMEOUTS * gateway.settings.send_timeout_s
    gateway.deliveries.apply(foreign_claim(github_key(PUSH), age_s=attempt_s + CLOCK_SKEW_S + 1))
    answer = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert answer.status_code == 202 and answer.json()["run_id"] == "r-elsewhere"
    await gateway.deliveries.settle(1.0)
    [request] = bus.requests()
    assert (request.run_id, request.trigger.delivery_id, request.parameters) == (
        "r-elsewhere",
        "d-elsewhere",
        {"commit": "abc"},
    )
    [started] = delivery_records(bus)
    assert (started.state, started.claim_id) == (DeliveryState.STARTED, "other-replica-claim")


async def test_a_fresh_unfinished_claim_of_another_replica_gets_a_503_not_a_second_run(
    bus: FakeBus,
) -> None:
    gateway = Gateway.in_memory(make_settings(send_timeout_s=0.2), bus)
    gateway.deliveries.apply(foreign_claim(github_key(PUSH), age_s=0))
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        answer = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert bus.published == []


async def test_a_failed_attempt_is_taken_over_at_once_by_the_retry_with_the_claims_run_ids(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    real_publish = bus.publish

    async def requests_topic_down(topic: str, key: str, value: Any) -> RecordPosition:
        if isinstance(value, PipelineRequest):
            bus.down = True
        try:
            return await real_publish(topic, key, value)
        finally:
            bus.down = False

    bus.publish = requests_topic_down  # type: ignore[method-assign]
    failed = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert failed.status_code == 503 and bus.requests() == []
    [claim] = delivery_records(bus)
    bus.publish = real_publish  # type: ignore[method-assign]
    # the sender retries (GitHub's redeliver keeps the id; an attacker's new id changes nothing)
    retry = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-other"))
    assert retry.status_code == 202 and retry.json()["duplicate"] is False
    assert [r.run_id for r in bus.requests()] == [r.run_id for r in claim.runs]
    assert all(r.trigger.delivery_id == "d-1" for r in bus.requests())
    await gateway.deliveries.settle(1.0)
    assert [r.state for r in delivery_records(bus)] == [DeliveryState.CLAIMED, DeliveryState.STARTED]


async def test_the_answer_does_not_wait_for_the_started_record_and_losing_it_starts_nothing_twice(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    held = asyncio.Event()
    real_publish = bus.publish

    async def started_record_stuck(topic: str, key: str, value: Any) -> RecordPosition:
        if isinstance(value, WebhookDelivery) and value.state is DeliveryState.STARTED:
            await held.wait()  # Kafka has not acknowledged it (yet)
            raise GatewayTransientError("broker down")
        return await real_publish(topic, key, value)

    bus.publish = started_record_stuck  # type: ignore[method-assign]
    first = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert first.status_code == 202 and len(bus.requests()) == 2, "answered once the requests were acked"
    held.set()
    await gateway.deliveries.settle(1.0)
    assert [r.state for r in delivery_records(bus)] == [DeliveryState.CLAIMED], "the STARTED record was lost"
    # the sender's retry, here: this replica knows its runs were requested
    copy = await client.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert copy.status_code == 200 and copy.json()["duplicate"] is True
    # at another replica (or after a restart): the claim looks unfinished and is taken over once its
    # attempt time passed, and the requests ledger, which read the runs' requests, keeps them from a second
    other = Gateway.in_memory(gateway.settings, bus)
    attempt_s = ATTEMPT_SEND_TIMEOUTS * gateway.settings.send_timeout_s
    [claim] = delivery_records(bus)
    old = claim.first_seen_at.timestamp() - attempt_s - CLOCK_SKEW_S - 1
    other.deliveries.apply(claim.model_copy(update={"first_seen_at": datetime.fromtimestamp(old, UTC)}))
    for request in bus.requests():
        other.ledger.record(request.run_id)  # what its follower read on the requests topic
    transport = httpx.ASGITransport(app=create_app(other))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as elsewhere:
        retry = await elsewhere.post("/webhooks/github", content=PUSH, headers=github(PUSH, "d-1"))
    assert retry.status_code in (200, 202) and retry.json()["duplicate"] is True, retry.text
    assert len(bus.requests()) == 2, "no run requested twice"


async def test_an_unmatched_delivery_is_remembered_so_a_later_rule_does_not_start_on_its_replay(
    client: httpx.AsyncClient, bus: FakeBus, gateway: Gateway
) -> None:
    ping = b'{"zen": "Keep it logically awesome."}'
    first = await client.post("/webhooks/github", content=ping, headers=github(ping, "p-1", event="ping"))
    assert first.status_code == 200 and first.json()["runs"] == []
    [record] = delivery_records(bus)
    assert record.state is DeliveryState.STARTED and record.runs == []  # nothing to start: done at once
    # a rule for the event appears later; the replay of the old delivery starts nothing
    rules = [*gateway.settings.triggers, {"source": "github", "event": "ping", "definition": "pinged"}]
    gateway.settings = make_settings(triggers=rules)
    replay = await client.post("/webhooks/github", content=ping, headers=github(ping, "p-1", event="ping"))
    assert replay.status_code == 200 and replay.json()["runs"] == [] and bus.requests() == []


# ------------------------------------------------------------------------------------ replay memory
def test_the_book_keeps_the_first_claim_and_forgets_by_age_and_capacity() -> None:
    book = DeliveryBook(memory_s=100, capacity=2)
    now = time.time()

    def claim(key: str, claim_id: str, age: float) -> WebhookDelivery:
        return foreign_claim(key, age_s=age).model_copy(update={"claim_id": claim_id})

    book.apply(claim("s:id:a", "first", 10))
    book.apply(claim("s:id:a", "second", 5))  # a later copy loses
    found = book.get("s:id:a", now)
    assert found is not None and found.claim_id == "first" and not found.started
    book.apply(claim("s:id:a", "second", 5).model_copy(update={"state": DeliveryState.STARTED}))
    assert not book.get("s:id:a", now).started  # type: ignore[union-attr]  # the loser's mark is not the delivery's
    book.apply(claim("s:id:a", "first", 10).model_copy(update={"state": DeliveryState.STARTED}))
    assert book.get("s:id:a", now).started  # type: ignore[union-attr]
    assert book.get("s:id:a", now + 95) is None  # past its memory time
    book.apply(claim("s:id:b", "b", 1))
    book.apply(claim("s:id:c", "c", 0))  # over capacity: the oldest goes first
    assert book.get("s:id:a", now) is None and len(book) == 2
    book.apply(claim("s:id:a", "late", -200))  # first seen again after its memory: a new delivery
    assert book.get("s:id:a", now + 200).claim_id == "late"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------- hostile JSON
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "nests deeper than 64"),  # before: RecursionError, a 500
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nests deeper than 64"),
        (b'{"ref": ' + b"1" * 4500 + b"}", "number literal"),  # before: ValueError, a 500
        (b'{"ref": NaN}', "NaN"),
        (b'{"ref": "refs/heads/main", "ref": "refs/heads/dev"}', "repeats a key"),
        (b'{"ref": "refs/heads/main", "head_commit": {"id": "\\ud800"}}', "surrogate"),  # before: a 500
    ],
)
async def test_hostile_signed_json_is_a_400_with_a_reason(
    client: httpx.AsyncClient, bus: FakeBus, body: bytes, reason: str
) -> None:
    response = await client.post("/webhooks/github", content=body, headers=github(body, "h-1"))
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    assert bus.published == []


@pytest.mark.parametrize("delivery_id", ["x" * 201, "tab\there", "esc\x1bid"], ids=["long", "tab", "esc"])
async def test_unprintable_or_huge_delivery_ids_are_a_400(
    client: httpx.AsyncClient, bus: FakeBus, delivery_id: str
) -> None:
    body = b'{"a": 1}'
    headers = {**sign_hmac(body, PLAIN_SECRET, header="X-Plain-Sig"), "X-Delivery-Id": delivery_id}
    response = await client.post("/webhooks/plain", content=body, headers=headers)
    assert response.status_code == 400 and "delivery id" in response.json()["detail"]


# Bodies a hostile signer might send: valid JSON of any shape, deep nests, broken fragments, raw bytes.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),  # floats include NaN/Infinity: Python writes them
    st.integers(min_value=60, max_value=3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.lists(
        st.sampled_from([b"[", b"]", b"{", b"}", b'"\\ud800"', b"1e999", b'"k":', b","]), max_size=80
    ).map(b"".join),
    st.binary(max_size=200),
)


@functools.cache
def _fuzzed_app() -> Any:
    """One gateway for every example: building one per example made the test 30 s; what it remembers of
    earlier deliveries (their ids) only adds replays to the inputs, which must not be a 5xx either."""
    return create_app(Gateway.in_memory(make_settings(max_body_bytes=BODY_LIMIT), FakeBus()))


@given(body=_bodies, event=st.sampled_from(["push", "ping", "release"]), delivery=st.text(max_size=30))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
async def test_fuzzed_signed_deliveries_never_get_a_server_error(
    body: bytes, event: str, delivery: str
) -> None:
    transport = httpx.ASGITransport(app=_fuzzed_app())
    headers = {
        "X-Hub-Signature-256": "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest(),
        "X-GitHub-Delivery": delivery.encode("ascii", "replace").decode(),
        "X-GitHub-Event": event,
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code in (200, 202, 400), (response.status_code, response.text, body[:80])
