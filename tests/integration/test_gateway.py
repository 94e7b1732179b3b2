"""The gateway against the real broker: its own service code (``GatewayService.run``) on a thread, uvicorn
on a free loopback port, private topics (unique suffix), API keys on (an admin key seeded on the keys
topic through the Kafka door before it starts). What Kafka holds is read back with confluent-kafka
watermarks and a group-less consumer, independent of the gateway's own reading."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.gateway.configuration import GatewaySettings
from services.gateway.service import GatewayService
from shared.auth.keys import IssuedKey, issue_key
from shared.avro import AvroSerde
from shared.contracts import (
    DEFAULT_TENANT,
    PipelineRequest,
    PipelineResult,
    Role,
    RunStatus,
    TriggerKind,
    utcnow,
)
from shared.kafka.acls import Principal
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, Topics, TopicSpec
from shared.settings import KafkaSettings
from shared.signals import GracefulShutdown
from tests.helpers import wait_until
from tests.support import secure_kafka

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
SPEC: dict[str, Any] = {
    "name": "gh-commits",
    "source": {"type": "event", "records_path": "commits"},
    "destination": {"type": "jsonl", "path": "/tmp/gh-commits.jsonl"},
}
GATEWAY_TOPICS = (
    Topics.REQUESTS,
    Topics.DEFINITIONS,
    Topics.EVENTS,
    Topics.RESULTS,
    Topics.ALERTS,  # followed for GET /alerts
    Topics.DEAD_LETTERS,  # followed for GET /dead-letters
    Topics.DELIVERIES,
    Topics.API_KEYS,
    Topics.AUDIT,
)


@pytest.fixture
def topic_suffix(kafka_bootstrap: str) -> Iterator[str]:
    suffix = f".gw-{uuid.uuid4().hex[:8]}"
    specs = [
        TopicSpec(t.name + suffix, t.partitions, dict(t.config)) for t in TOPICS if t.name in GATEWAY_TOPICS
    ]
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), specs)
    yield suffix
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([s.name for s in specs])


def seed_key(bootstrap: str, suffix: str, role: Role = Role.ADMIN, tenant: str = DEFAULT_TENANT) -> IssuedKey:
    """A key on the keys topic, as `aoetl auth keys create` writes it through the Kafka door (as the cli
    user on a secured broker)."""
    issued = issue_key(tenant, role, created_by="test")
    producer = Producer(secure_kafka.cli_settings(bootstrap).to_confluent())
    producer.produce(Topics.API_KEYS + suffix, AvroSerde().encode(issued.record), key=issued.key_id)
    assert producer.flush(10) == 0
    return issued


@dataclass
class RunningGateway:
    service: GatewayService
    shutdown: GracefulShutdown
    thread: threading.Thread
    url: str
    admin: IssuedKey | None = None

    @property
    def auth(self) -> dict[str, str]:
        """The headers of an admin's API call."""
        assert self.admin is not None
        return {"Authorization": f"Bearer {self.admin.token}"}

    def stop(self) -> None:
        self.shutdown.request("test over")
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the gateway did not stop"


def start_gateway(
    bootstrap: str, suffix: str, *, admin: IssuedKey | None = None, **overrides: Any
) -> RunningGateway:
    admin = admin or seed_key(bootstrap, suffix)
    overrides.setdefault("auth_api_keys", True)
    settings = GatewaySettings(
        kafka=secure_kafka.principal_settings(bootstrap, Principal.GATEWAY),  # its own user when secured
        topic_suffix=suffix,
        api_port=0,
        max_body_bytes=4096,
        webhooks={"github": {"scheme": "github", "secrets": [SECRET]}},
        triggers=[
            {
                "source": "github",
                "event": "push",
                "definition": "gh-commits",
                "parameters": {"commit": "head_commit.id"},
            }
        ],
        **overrides,
    )
    service = GatewayService(settings, serde=AvroSerde())
    shutdown = GracefulShutdown()
    thread = threading.Thread(target=service.run, args=(shutdown,), name="gateway-under-test", daemon=True)
    thread.start()
    port = wait_until(lambda: service.api_port, timeout=30, message="the gateway API to listen")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, timeout=60, message="gateway /ready")
    return RunningGateway(service, shutdown, thread, url, admin)


@pytest.fixture
def gateway(kafka_bootstrap: str, topic_suffix: str) -> Iterator[RunningGateway]:
    running = start_gateway(kafka_bootstrap, topic_suffix)
    yield running
    running.stop()


def signed(body: bytes, delivery: str, event: str = "push", secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery, "X-GitHub-Event": event}


def records_on(bootstrap: str, topic: str) -> int:
    """How many records the topic holds right now (sum of high watermarks; nothing else writes it)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"gw-test-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        )
    finally:
        consumer.close()


def read_requests(bootstrap: str, topic: str, expected: int) -> list[PipelineRequest]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"gw-test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    serde = AvroSerde()
    found: list[PipelineRequest] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])

        def all_read() -> bool:
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None, msg.error()
                found.append(serde.decode(msg.value() or b"", PipelineRequest))
            return len(found) >= expected

        wait_until(all_read, timeout=30, message=f"{expected} request(s) on {topic}")
    finally:
        consumer.close()
    return found


PUSH = json.dumps(
    {"ref": "refs/heads/main", "head_commit": {"id": "c0ffee"}, "commits": [{"id": "c0ffee"}]}
).encode()


def test_rejections_publish_nothing_and_a_good_delivery_exactly_one_request(
    gateway: RunningGateway, kafka_bootstrap: str, topic_suffix: str
) -> None:
    topic = Topics.REQUESTS + topic_suffix
    url = gateway.url
    rejected = [
        httpx.post(f"{url}/webhooks/gitlab", content=PUSH, headers=signed(PUSH, "r-1")),
        httpx.post(f"{url}/webhooks/github", content=PUSH, headers=signed(PUSH, "r-2", secret="wrong")),
        httpx.post(f"{url}/webhooks/github", content=b"{oops", headers=signed(b"{oops", "r-3")),
        httpx.post(f"{url}/webhooks/github", content=b"x" * 5000, headers=signed(b"x" * 5000, "r-4")),
    ]
    assert [r.status_code for r in rejected] == [404, 401, 400, 413]
    assert records_on(kafka_bootstrap, topic) == 0

    accepted = httpx.post(f"{url}/webhooks/github", content=PUSH, headers=signed(PUSH, "good-1"))
    assert accepted.status_code == 202, accepted.text
    # answered only after the broker acknowledged: the record is there at once, no waiting
    assert records_on(kafka_bootstrap, topic) == 1
    [request] = read_requests(kafka_bootstrap, topic, 1)
    assert request.run_id == accepted.json()["run_id"]
    assert request.definition_name == "gh-commits" and request.parameters == {"commit": "c0ffee"}
    assert request.payload == PUSH
    assert (request.trigger.kind, request.trigger.delivery_id) == (TriggerKind.WEBHOOK, "good-1")

    replay = httpx.post(f"{url}/webhooks/github", content=PUSH, headers=signed(PUSH, "good-1"))
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True and replay.json()["run_id"] == request.run_id
    assert records_on(kafka_bootstrap, topic) == 1


def test_restart_keeps_definitions_and_recognises_replays(
    gateway: RunningGateway, kafka_bootstrap: str, topic_suffix: str
) -> None:
    url, auth = gateway.url, gateway.auth
    assert httpx.put(f"{url}/definitions/gh-commits", json=SPEC, headers=auth).status_code == 201
    doomed = {**SPEC, "name": "doomed"}
    assert httpx.put(f"{url}/definitions/doomed", json=doomed, headers=auth).status_code == 201
    v2 = httpx.put(f"{url}/definitions/gh-commits", json={**SPEC, "description": "v2"}, headers=auth)
    assert v2.json()["version"] == 2
    assert httpx.delete(f"{url}/definitions/doomed", headers=auth).status_code == 204
    first = httpx.post(f"{url}/webhooks/github", content=PUSH, headers=signed(PUSH, "before-restart"))
    assert first.status_code == 202
    gateway.stop()

    restarted = start_gateway(kafka_bootstrap, topic_suffix, admin=gateway.admin)  # the key survives too
    try:
        url = restarted.url
        listed = httpx.get(f"{url}/definitions", headers=auth).json()
        assert [(d["name"], d["version"], d["spec"]["description"]) for d in listed] == [
            ("gh-commits", 2, "v2")
        ]
        assert httpx.get(f"{url}/definitions/doomed", headers=auth).status_code == 404
        replay = httpx.post(f"{url}/webhooks/github", content=PUSH, headers=signed(PUSH, "before-restart"))
        assert replay.status_code == 200 and replay.json()["run_id"] == first.json()["run_id"]
        assert records_on(kafka_bootstrap, Topics.REQUESTS + topic_suffix) == 1
    finally:
        restarted.stop()
        gateway.thread.join(timeout=1)


def test_run_status_reflects_the_result_topic(
    gateway: RunningGateway, kafka_bootstrap: str, topic_suffix: str
) -> None:
    auth = gateway.auth
    submitted = httpx.post(
        f"{gateway.url}/runs", json={"spec": SPEC, "payload": {"commits": []}}, headers=auth
    )
    assert submitted.status_code == 202
    run_id = submitted.json()["run_id"]
    assert httpx.get(f"{gateway.url}/runs/{run_id}", headers=auth).json()["status"] == "SUBMITTED"

    result = PipelineResult(
        run_id=run_id,
        request_id=submitted.json()["request_id"],
        pipeline="gh-commits",
        status=RunStatus.COMPLETED,
        started_at=utcnow(),
        finished_at=utcnow(),
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(Topics.RESULTS + topic_suffix, AvroSerde().encode(result), key=run_id)
    assert producer.flush(10) == 0

    view = wait_until(
        lambda: (
            (v := httpx.get(f"{gateway.url}/runs/{run_id}", headers=auth).json())["status"] == "COMPLETED"
            and v
        ),
        timeout=30,
        message="the run view to fold the result",
    )
    assert view["result"]["pipeline"] == "gh-commits" and view["trigger"]["kind"] == "api"


def test_without_kafka_webhooks_get_503(topic_suffix: str) -> None:
    running = start_gateway_unready("127.0.0.1:1", topic_suffix)
    try:
        response = httpx.post(f"{running.url}/webhooks/github", content=PUSH, headers=signed(PUSH, "down-1"))
        assert response.status_code == 503
        assert httpx.get(f"{running.url}/ready").status_code == 503
    finally:
        running.stop()


def start_gateway_unready(bootstrap: str, suffix: str) -> RunningGateway:
    settings = GatewaySettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topic_suffix=suffix,
        api_port=0,
        connect_timeout_s=0.5,
        webhooks={"github": {"scheme": "github", "secrets": [SECRET]}},
    )
    service = GatewayService(settings, serde=AvroSerde())
    shutdown = GracefulShutdown()
    thread = threading.Thread(target=service.run, args=(shutdown,), daemon=True)
    thread.start()
    port = wait_until(lambda: service.api_port, timeout=30, message="the gateway API to listen")
    return RunningGateway(service, shutdown, thread, f"http://127.0.0.1:{port}")


def test_cli_applies_definitions_via_kafka_and_sends_a_signed_webhook(
    gateway: RunningGateway, kafka_bootstrap: str, topic_suffix: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from aoetl.cli import app

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "a.yaml").write_text(yaml.safe_dump(SPEC))
    (specs / "b.json").write_text(json.dumps({**SPEC, "name": "second"}))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_TOPIC_SUFFIX": topic_suffix,
        "AOETL_CONFIG": str(tmp_path / "no-config.toml"),  # never the developer's own token
    }
    runner = CliRunner()

    applied = runner.invoke(app, ["definitions", "apply", str(specs)], env=env)
    assert applied.exit_code == 0, applied.output
    assert "gh-commits v1" in applied.output and "second v1" in applied.output
    again = runner.invoke(app, ["definitions", "apply", str(specs / "a.yaml")], env=env)
    assert "gh-commits v1 (unchanged)" in again.output
    # the gateway follows the topic: what the CLI published through Kafka shows up in its API
    wait_until(
        lambda: (
            [d["name"] for d in httpx.get(f"{gateway.url}/definitions", headers=gateway.auth).json()]
            == ["gh-commits", "second"]
        ),
        timeout=30,
        message="the gateway to read the definitions the CLI published",
    )
    unauthenticated = runner.invoke(app, ["definitions", "list", "--gateway", gateway.url], env=env)
    assert unauthenticated.exit_code != 0 and "401" in unauthenticated.output
    assert gateway.admin is not None
    listed = runner.invoke(
        app,
        ["definitions", "list", "--gateway", gateway.url],
        env={**env, "AOETL_TOKEN": gateway.admin.token},
    )
    assert listed.exit_code == 0 and "second" in listed.output

    payload = tmp_path / "push.json"
    payload.write_bytes(PUSH)
    sent = runner.invoke(
        app,
        [
            "webhook",
            "test",
            "github",
            "--payload",
            str(payload),
            "--url",
            gateway.url,
            "--secret",
            SECRET,
            "--scheme",
            "github",
            "--event",
            "push",
            "--delivery-id",
            "cli-1",
        ],
        env=env,
    )
    assert sent.exit_code == 0, sent.output
    assert "202" in sent.output
    wrong = runner.invoke(
        app,
        [
            "webhook",
            "test",
            "github",
            "--payload",
            str(payload),
            "--url",
            gateway.url,
            "--secret",
            "nope",
            "--scheme",
            "github",
        ],
        env=env,
    )
    assert wrong.exit_code == 1 and "401" in wrong.output
    assert records_on(kafka_bootstrap, Topics.REQUESTS + topic_suffix) == 1
