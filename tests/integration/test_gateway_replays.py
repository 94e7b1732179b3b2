"""Webhook attacks against the real gateway processes (``python -m services.gateway``) and the real broker:

* a delivery accepted, the gateway restarted (a new process, nothing in memory), the delivery replayed, as
  it was or under a new delivery id: a duplicate, no second request, for every scheme;
* a copy after the source's replay window: refused (409), and for the timestamped schemes a captured copy
  after the tolerance: 401 stale, so no copy ever starts a second run;
* the same delivery sent to two replicas at once: one request, both answers naming the same run; a copy
  at the other replica later: a duplicate, from the memory the replicas share;
* deeply nested, over-long-number, invalid-Unicode, NaN or truncated signed JSON: 400 with a reason, the
  gateway unharmed;
* an empty or short webhook secret: the gateway does not start (exit 2), the source named.

What Kafka holds is read back independently of the gateway (watermarks, a group-less consumer)."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from aoetl.devstack.osproc import free_port
from aoetl.devstack.processes import ServiceSupervisor
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, Topics, TopicSpec
from shared.runtime import EXIT_BAD_CONFIGURATION
from shared.settings import KafkaSettings
from shared.webhooks.signatures import sign_github, sign_hmac, sign_standard, sign_stripe
from tests.helpers import make_state_dir, wait_until
from tests.integration.test_gateway import read_requests, records_on

pytestmark = pytest.mark.integration

GH_SECRET = "gh-integration-secret-0001"
HMAC_SECRET = "hmac-integration-secret-01"
STRIPE_SECRET = "whsec_stripe-integration-secret"
STD_SECRET = "whsec_" + base64.b64encode(b"standard-integration-key-32bytes").decode()
SHORT_S = 2  # the short sources' replay window and timestamp tolerance
LONG_S = 3600

SOURCES = {
    "gh": {"scheme": "github", "secrets": [GH_SECRET], "replay_window_s": LONG_S},
    "gh-short": {"scheme": "github", "secrets": [GH_SECRET], "replay_window_s": SHORT_S},
    "plain": {"scheme": "hmac", "secrets": [HMAC_SECRET], "replay_window_s": LONG_S},
    "stripe": {"scheme": "stripe", "secrets": [STRIPE_SECRET], "replay_window_s": LONG_S},
    "stripe-short": {
        "scheme": "stripe",
        "secrets": [STRIPE_SECRET],
        "replay_window_s": SHORT_S,
        "tolerance_s": SHORT_S,
    },
    "std": {"scheme": "standard", "secrets": [STD_SECRET], "replay_window_s": LONG_S},
    "std-short": {
        "scheme": "standard",
        "secrets": [STD_SECRET],
        "replay_window_s": SHORT_S,
        "tolerance_s": SHORT_S,
    },
}
TRIGGERS = [{"source": name, "definition": f"on-{name}"} for name in SOURCES]


@dataclass
class Gateways:
    """Gateway processes on private topics; ``start`` adds a replica, ``stop`` ends them all."""

    bootstrap: str
    suffix: str
    supervisor: ServiceSupervisor

    def start(self) -> str:
        api_port = free_port()
        [process] = self.supervisor.start(
            "gateway",
            env={
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "AOETL_TOPIC_SUFFIX": self.suffix,
                "AOETL_LOG_FORMAT": "text",
                "AOETL_API_PORT": str(api_port),
                "AOETL_WEBHOOKS": json.dumps(SOURCES),
                "AOETL_TRIGGERS": json.dumps(TRIGGERS),
            },
        )
        self.supervisor.wait_ready([process], timeout=90)
        return f"http://127.0.0.1:{api_port}"

    def restart(self) -> str:
        self.supervisor.stop("gateway")
        return self.start()

    @property
    def requests_topic(self) -> str:
        return Topics.REQUESTS + self.suffix

    def requests(self) -> int:
        return records_on(self.bootstrap, self.requests_topic)


@pytest.fixture
def gateways(kafka_bootstrap: str) -> Iterator[Gateways]:
    with private_gateways(kafka_bootstrap) as gateways_:
        yield gateways_


@pytest.fixture(scope="module")
def one_gateway(kafka_bootstrap: str) -> Iterator[tuple[Gateways, str]]:
    """One started gateway for the tests that only send it deliveries it must refuse (a start is ~5 s)."""
    with private_gateways(kafka_bootstrap) as gateways_:
        yield gateways_, gateways_.start()


@contextlib.contextmanager
def private_gateways(kafka_bootstrap: str) -> Iterator[Gateways]:
    suffix = f".gwr-{uuid.uuid4().hex[:8]}"
    specs = [TopicSpec(t.name + suffix, t.partitions, dict(t.config)) for t in TOPICS]
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), specs)
    state_dir = make_state_dir("aoetl-gw-replays-")
    supervisor = ServiceSupervisor(state_dir)
    try:
        yield Gateways(kafka_bootstrap, suffix, supervisor)
    finally:
        supervisor.stop()
        AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([s.name for s in specs])


def body_for(name: str) -> bytes:
    return json.dumps({"id": f"evt_{name}_{uuid.uuid4().hex}", "type": "thing.happened", "n": 1}).encode()


def signed(source: str, body: bytes, delivery_id: str, *, timestamp: int | None = None) -> dict[str, str]:
    """Headers as the source's sender writes them (Stripe's id is the body's ``id``)."""
    scheme = SOURCES[source]["scheme"]
    if scheme == "github":
        return {**sign_github(body, GH_SECRET), "X-GitHub-Delivery": delivery_id, "X-GitHub-Event": "push"}
    if scheme == "hmac":
        return {**sign_hmac(body, HMAC_SECRET), "X-Delivery-Id": delivery_id}
    if scheme == "stripe":
        return sign_stripe(body, STRIPE_SECRET, timestamp=timestamp)
    return sign_standard(body, STD_SECRET, msg_id=delivery_id, timestamp=timestamp)


def post(url: str, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/webhooks/{source}", content=body, headers=headers, timeout=30)


def test_replays_after_a_restart_are_duplicates_and_after_the_window_refused(gateways: Gateways) -> None:
    url = gateways.start()
    bodies = {name: body_for(name) for name in SOURCES}
    originals = {name: signed(name, bodies[name], f"{name}-d1") for name in SOURCES}
    first = {name: post(url, name, bodies[name], originals[name]) for name in SOURCES}
    last_first_seen = time.time()  # every delivery was first seen (claimed) before this
    assert {name: r.status_code for name, r in first.items()} == dict.fromkeys(SOURCES, 202)
    assert gateways.requests() == len(SOURCES)

    url = gateways.restart()  # a new process: the replay memory is what Kafka holds
    wait_until(
        lambda: time.time() > last_first_seen + SHORT_S,
        timeout=SHORT_S + 1,
        message="the short windows to pass",
    )

    for name in ("gh", "plain", "stripe", "std"):
        run_id = first[name].json()["run_id"]
        # the sender's retry: GitHub/HMAC as they were (a replay has the same bytes), Stripe and
        # Standard Webhooks re-signed with a fresh timestamp, as those senders retry
        retry = post(url, name, bodies[name], signed(name, bodies[name], f"{name}-d1"))
        assert retry.status_code == 200, (name, retry.text)
        assert retry.json()["duplicate"] is True and retry.json()["run_id"] == run_id
    for name in ("gh", "plain"):
        # GitHub and generic HMAC do not sign their delivery-id header: an attacker changes it
        renamed = post(url, name, bodies[name], signed(name, bodies[name], f"{name}-forged-id"))
        assert renamed.status_code == 200 and renamed.json()["run_id"] == first[name].json()["run_id"]
    for name in ("gh-short", "stripe-short", "std-short"):
        late = post(url, name, bodies[name], signed(name, bodies[name], f"{name}-d1"))
        assert late.status_code == 409 and "replay window" in late.json()["detail"], (name, late.text)
    for name in ("stripe-short", "std-short"):
        captured = post(url, name, bodies[name], originals[name])  # the original bytes and headers
        assert captured.status_code == 401 and "stale" in captured.json()["detail"]
    assert gateways.requests() == len(SOURCES), "no copy started a second run"

    new_body = body_for("gh")
    fresh = post(url, "gh", new_body, signed("gh", new_body, "gh-d2"))
    assert fresh.status_code == 202  # new deliveries still start their runs


def test_one_delivery_at_two_replicas_at_once_is_requested_once(gateways: Gateways) -> None:
    urls = [gateways.start(), gateways.start()]
    deliveries = 8
    bodies = [body_for(f"race{i}") for i in range(deliveries)]

    def send(i: int, replica: int) -> httpx.Response:
        # a forged second copy under its own id at the other replica, at the same moment
        return post(urls[replica], "gh", bodies[i], signed("gh", bodies[i], f"race-{i}-{replica}"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2 * deliveries) as pool:
        futures = {(i, r): pool.submit(send, i, r) for i in range(deliveries) for r in (0, 1)}
        answers = {k: f.result() for k, f in futures.items()}
    for i in range(deliveries):
        pair = [answers[(i, 0)], answers[(i, 1)]]
        assert sorted(a.status_code for a in pair) == [200, 202], [a.text for a in pair]
        assert pair[0].json()["run_id"] == pair[1].json()["run_id"]
    requests = read_requests(gateways.bootstrap, gateways.requests_topic, deliveries)
    assert len({r.run_id for r in requests}) == deliveries
    assert gateways.requests() == deliveries, "a racing copy published a second request"

    # one replica accepts, the other recognises a later copy from the shared memory alone
    body = body_for("later")
    accepted = post(urls[0], "plain", body, signed("plain", body, "later-1"))
    copy = post(urls[1], "plain", body, signed("plain", body, "later-2"))
    assert (accepted.status_code, copy.status_code) == (202, 200), copy.text
    assert copy.json()["run_id"] == accepted.json()["run_id"]
    assert gateways.requests() == deliveries + 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "nests deeper than 64"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nests deeper than 64"),
        (b'{"id": "x", "n": ' + b"7" * 5000 + b"}", "number literal"),
        (b'{"id": "\\ud800", "type": "x"}', "surrogate"),
        (b'{"id": "x", "n": NaN}', "NaN"),
        (b'{"id": "x", "type": ', "not valid JSON"),
    ],
    ids=["deep-array", "deep-object", "huge-int", "surrogate", "nan", "truncated"],
)
def test_hostile_signed_json_is_a_400_never_a_500(
    one_gateway: tuple[Gateways, str], body: bytes, reason: str
) -> None:
    gateways, url = one_gateway
    for source in ("gh", "stripe"):
        response = post(url, source, body, signed(source, body, f"hostile-{uuid.uuid4().hex}"))
        assert response.status_code == 400, (source, response.status_code, response.text[:200])
        assert reason in response.json()["detail"]
    assert httpx.get(f"{url}/ready", timeout=5).status_code == 200
    assert gateways.requests() == 0


@pytest.mark.parametrize(
    ("source", "note"),
    [
        ({"scheme": "github", "secrets": [""]}, "empty"),
        ({"scheme": "hmac", "secrets": [HMAC_SECRET, "short"]}, "rotated list with a short one"),
        ({"scheme": "stripe", "secrets": ["whsec_"]}, "prefix only"),
        (
            {"scheme": "standard", "secrets": ["whsec_" + base64.b64encode(b"8 bytes!").decode()]},
            "8-byte key",
        ),
    ],
    ids=["github-empty", "hmac-rotated-short", "stripe-prefix", "standard-8-bytes"],
)
def test_an_empty_or_short_secret_stops_the_gateway_at_start_up(
    kafka_bootstrap: str, tmp_path: Path, source: dict[str, object], note: str
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_TOPIC_SUFFIX": f".gws-{uuid.uuid4().hex[:8]}",
        "AOETL_API_PORT": str(free_port()),
        "AOETL_HTTP_PORT": "0",
        "AOETL_WEBHOOKS": json.dumps({"billing-hook": source}),
    }
    ran = subprocess.run(
        [sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == EXIT_BAD_CONFIGURATION, (note, ran.returncode, ran.stderr[-500:])
    assert "AOETL_WEBHOOKS" in ran.stderr and "'billing-hook' secret #" in ran.stderr, ran.stderr
    assert "short" not in ran.stderr.replace("'billing-hook'", "")  # the secret itself is not echoed
