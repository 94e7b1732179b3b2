"""API keys end to end on the real broker: made by the CLI through the Kafka door, honoured by two gateway
replicas that follow the keys topic, refused by both within the staleness bound once revoked; the audit
topic holds a record of every mutating call; ``aoetl dev up`` hands the CLI an admin key that works."""

from __future__ import annotations

import functools
import json
import stat
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from shared.avro import AvroSerde
from shared.contracts import DEFAULT_TENANT, AuditChannel, AuditOutcome, AuditRecord, Role
from shared.kafka.topics import Topics
from tests.helpers import wait_until
from tests.integration.test_gateway import (
    RunningGateway,
    gateway,
    read_requests,
    records_on,
    seed_key,
    start_gateway,
    topic_suffix,
)

pytestmark = pytest.mark.integration
__all__ = ["gateway", "topic_suffix"]  # the fixtures, imported for this module's tests

STALENESS_S = 2.0
SPEC = {
    "name": "keyed",
    "source": {"type": "event", "records_path": "rows"},
    "destination": {"type": "jsonl", "path": "/tmp/keyed.jsonl"},
}


@pytest.fixture
def replicas(kafka_bootstrap: str, topic_suffix: str) -> Iterator[list[RunningGateway]]:
    first = start_gateway(kafka_bootstrap, topic_suffix, auth_keys_max_staleness_s=STALENESS_S)
    second = start_gateway(kafka_bootstrap, topic_suffix, auth_keys_max_staleness_s=STALENESS_S)
    yield [first, second]
    first.stop()
    second.stop()


def cli(*args: str, env: dict[str, str]) -> str:
    result = CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def whoami(gateway: RunningGateway, token: str) -> int:
    return httpx.get(f"{gateway.url}/auth/whoami", headers={"Authorization": f"Bearer {token}"}).status_code


def knows(gateway: RunningGateway, token: str, status: int) -> bool:
    return whoami(gateway, token) == status


def audit_records(bootstrap: str, topic: str) -> list[AuditRecord]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4().hex}"})
    serde = AvroSerde()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        found: list[AuditRecord] = []

        def read_all() -> bool:
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None, msg.error()
                found.append(serde.decode(msg.value() or b"", AuditRecord))
            return len(found) >= sum(ends.values())

        wait_until(read_all, timeout=30, message=f"the records of {topic}")
    finally:
        consumer.close()
    return sorted(found, key=lambda r: r.at)


def test_a_key_from_the_cli_works_on_every_replica_until_revoked_then_none_takes_it(
    replicas: list[RunningGateway], kafka_bootstrap: str, topic_suffix: str
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "AOETL_TOPIC_SUFFIX": topic_suffix}
    output = cli("auth", "keys", "create", "--tenant", "acme", "--role", "operator", env=env)
    key = output.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    for replica in replicas:  # each follows the keys topic: the new key reaches both
        wait_until(
            functools.partial(knows, replica, key, 200), timeout=30, message=f"{replica.url} to know the key"
        )

    operator = {"Authorization": f"Bearer {key}"}
    first, second = replicas
    assert httpx.post(f"{first.url}/runs", json={"spec": SPEC}, headers=operator).status_code == 202
    assert httpx.put(f"{second.url}/definitions/keyed", json=SPEC, headers=operator).status_code == 403

    listed = cli("auth", "keys", "list", "--tenant", "acme", env=env)
    assert key_id in listed and "operator" in listed and key not in listed

    cli("auth", "keys", "revoke", key_id, env=env)
    revoked_at = time.monotonic()  # the revocation is acknowledged by now
    for replica in replicas:
        wait_until(
            functools.partial(knows, replica, key, 401),
            timeout=STALENESS_S + 1.0,
            interval=0.05,
            message=f"{replica.url} to refuse the revoked key",
        )
    assert time.monotonic() - revoked_at <= STALENESS_S + 1.0
    assert "revoked" in cli("auth", "keys", "list", env=env)

    records = audit_records(kafka_bootstrap, Topics.AUDIT + topic_suffix)
    summary = [(r.channel, r.action, r.outcome) for r in records]
    assert summary == [
        (AuditChannel.CLI, "keys.create", AuditOutcome.ALLOWED),
        (AuditChannel.REST, "runs.submit", AuditOutcome.ALLOWED),
        (AuditChannel.REST, "definitions.put", AuditOutcome.DENIED),
        (AuditChannel.CLI, "keys.revoke", AuditOutcome.ALLOWED),
    ]
    rest = records[1]
    assert (rest.actor, rest.key_id, rest.tenant, rest.role) == (
        f"key:{key_id}",
        key_id,
        "acme",
        Role.OPERATOR,
    )
    assert records[0].object == records[3].object == f"key/{key_id}"
    assert all(key not in r.model_dump_json() for r in records)


def test_dev_up_hands_the_cli_an_admin_key_of_the_stack(
    kafka_bootstrap: str, postgres_dsn: str, topic_suffix: str, tmp_path: Path
) -> None:
    config = tmp_path / "cli" / "config.toml"
    env = {
        # the session's servers, as external ones: `dev up` starts nothing, creates the topics, and the key
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_POSTGRES_DSN": postgres_dsn,
        "AOETL_STATE_DIR": str(tmp_path / "state"),
        "AOETL_TOPIC_SUFFIX": topic_suffix,
        "AOETL_CONFIG": str(config),
    }
    up = cli("dev", "up", env=env)
    assert "new local admin key" in up
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    token = tomllib.loads(config.read_text())["gateway"]["token"]
    assert token not in up

    gateway = start_gateway(kafka_bootstrap, topic_suffix)
    try:
        me = httpx.get(f"{gateway.url}/auth/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and (me.json()["role"], me.json()["tenant"]) == ("admin", DEFAULT_TENANT)
        assert "holds a local admin key" in cli("dev", "up", env=env)  # kept, not replaced
        assert tomllib.loads(config.read_text())["gateway"]["token"] == token

        # what the CLI makes through Kafka is the key's tenant's: the gateway shows it to the dev key
        (tmp_path / "keyed.json").write_text(json.dumps(SPEC))
        cli("definitions", "apply", str(tmp_path / "keyed.json"), env=env)
        wait_until(
            lambda: "keyed" in cli("definitions", "list", "--gateway", gateway.url, env=env),
            timeout=30,
            message="the CLI's definition, through the gateway, with the dev key",
        )

        cli("auth", "keys", "revoke", token.split("_")[1], env=env)
        assert "new local admin key" in cli("dev", "up", env=env)  # a revoked key is replaced
        replacement = tomllib.loads(config.read_text())["gateway"]["token"]
        assert replacement != token
        wait_until(lambda: whoami(gateway, replacement) == 200, timeout=30, message="the new key")
    finally:
        gateway.stop()


# ------------------------------------------------------------------ the attacks of issue 11, on the wire
ATTACKS = {
    "submit": ("POST", "/runs", {"spec": SPEC}),
    "define": ("PUT", "/definitions/evil", {**SPEC, "name": "evil"}),
    "delete": ("DELETE", "/definitions/keyed", None),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_no_credentials_changes_nothing(
    gateway: RunningGateway, kafka_bootstrap: str, topic_suffix: str, attack: str
) -> None:
    """Once, anyone who reached the gateway could submit runs and replace or delete definitions; a claimed
    user (``X-Aoetl-User``) does not stand in for a token either."""
    assert httpx.put(f"{gateway.url}/definitions/keyed", json=SPEC, headers=gateway.auth).status_code == 201
    definitions_before = records_on(kafka_bootstrap, Topics.DEFINITIONS + topic_suffix)
    audit_before = records_on(kafka_bootstrap, Topics.AUDIT + topic_suffix)

    method, path, body = ATTACKS[attack]
    for headers in ({}, {"X-Aoetl-User": "admin"}, {"Authorization": "Bearer aoetl_forged_key"}):
        answer = httpx.request(method, f"{gateway.url}{path}", json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")

    assert records_on(kafka_bootstrap, Topics.REQUESTS + topic_suffix) == 0
    assert records_on(kafka_bootstrap, Topics.DEFINITIONS + topic_suffix) == definitions_before
    assert records_on(kafka_bootstrap, Topics.AUDIT + topic_suffix) == audit_before  # no one to name
    listed = httpx.get(f"{gateway.url}/definitions", headers=gateway.auth).json()
    assert [d["name"] for d in listed] == ["keyed"]


def test_a_claimed_user_is_ignored_the_token_decides(kafka_bootstrap: str, topic_suffix: str) -> None:
    viewer = seed_key(kafka_bootstrap, topic_suffix, Role.VIEWER, tenant="acme")
    operator = seed_key(kafka_bootstrap, topic_suffix, Role.OPERATOR, tenant="acme")
    gateway = start_gateway(kafka_bootstrap, topic_suffix)
    try:
        forged = {"X-Aoetl-User": "admin"}
        as_viewer = httpx.put(
            f"{gateway.url}/definitions/keyed", json=SPEC, headers=forged | bearer(viewer.token)
        )
        assert as_viewer.status_code == 403, as_viewer.text
        submitted = httpx.post(
            f"{gateway.url}/runs", json={"spec": SPEC}, headers=forged | bearer(operator.token)
        )
        assert submitted.status_code == 202, submitted.text

        [request] = read_requests(kafka_bootstrap, Topics.REQUESTS + topic_suffix, 1)
        assert request.run_id == submitted.json()["run_id"]
        assert request.requested_by == f"key:{operator.key_id}@acme"
        assert records_on(kafka_bootstrap, Topics.DEFINITIONS + topic_suffix) == 0

        denied, allowed = audit_records(kafka_bootstrap, Topics.AUDIT + topic_suffix)
        assert (denied.actor, denied.role, denied.action, denied.outcome) == (
            f"key:{viewer.key_id}",
            Role.VIEWER,
            "definitions.put",
            AuditOutcome.DENIED,
        )
        assert (allowed.actor, allowed.action, allowed.object, allowed.outcome) == (
            f"key:{operator.key_id}",
            "runs.submit",
            f"run/{request.run_id}",
            AuditOutcome.ALLOWED,
        )
    finally:
        gateway.stop()


# ------------------------------------------------------------------------------------------- limits
def test_a_principal_over_its_rate_is_told_when_to_come_back_and_others_are_not_held_up(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    viewer = seed_key(kafka_bootstrap, topic_suffix, Role.VIEWER)
    gateway = start_gateway(kafka_bootstrap, topic_suffix, rate_limit_per_s=0.5, rate_limit_burst=3)
    try:
        calls = [whoami(gateway, viewer.token) for _ in range(3)]
        assert calls == [200, 200, 200]
        refused = httpx.get(f"{gateway.url}/auth/whoami", headers=bearer(viewer.token))
        assert refused.status_code == 429, refused.text
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 2  # one token comes back every 2 s
        assert httpx.get(f"{gateway.url}/ready").status_code == 200  # probes are nobody's calls
        other = httpx.get(f"{gateway.url}/auth/whoami", headers=gateway.auth)
        assert other.status_code == 200  # another principal has its own budget

        started = time.monotonic()
        wait_until(lambda: whoami(gateway, viewer.token) == 200, timeout=retry_after + 2.0, interval=0.25)
        assert time.monotonic() - started <= retry_after + 2.0
    finally:
        gateway.stop()


def test_oversized_bodies_are_refused_before_they_are_read_whatever_the_endpoint(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    gateway = start_gateway(kafka_bootstrap, topic_suffix, api_max_body_bytes=2048)
    try:
        big = {**SPEC, "description": "x" * 4096}
        declared = httpx.put(f"{gateway.url}/definitions/keyed", json=big, headers=gateway.auth)
        assert declared.status_code == 413, declared.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while streaming
            yield b'{"spec": {"name": "keyed", "description": "'
            for _ in range(8):
                yield b"y" * 512
            yield b'"}}'

        streamed = httpx.post(
            f"{gateway.url}/runs",
            content=chunks(),
            headers=gateway.auth | {"Content-Type": "application/json"},
        )
        assert streamed.status_code == 413, streamed.text
        anonymous = httpx.post(f"{gateway.url}/auth/keys", content=b"{" + b" " * 4096 + b"}")
        assert anonymous.status_code == 413

        small = httpx.put(f"{gateway.url}/definitions/keyed", json=SPEC, headers=gateway.auth)
        assert small.status_code == 201, small.text  # the same endpoint, within the limit
        assert records_on(kafka_bootstrap, Topics.REQUESTS + topic_suffix) == 0
        assert records_on(kafka_bootstrap, Topics.DEFINITIONS + topic_suffix) == 1
    finally:
        gateway.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------------------ tenants
def test_a_tenants_objects_stay_its_own_on_every_replica(
    replicas: list[RunningGateway], kafka_bootstrap: str, topic_suffix: str
) -> None:
    """The tenant travels in the records: a replica that only read them from Kafka keeps them apart."""
    acme = seed_key(kafka_bootstrap, topic_suffix, Role.ADMIN, tenant="acme")
    globex = seed_key(kafka_bootstrap, topic_suffix, Role.ADMIN, tenant="globex")
    first, second = replicas
    for replica in replicas:
        wait_until(functools.partial(knows, replica, globex.token, 200), timeout=30, message="the keys")

    assert (
        httpx.put(f"{first.url}/definitions/keyed", json=SPEC, headers=bearer(acme.token)).status_code == 201
    )
    submitted = httpx.post(f"{first.url}/runs", json={"definition": "keyed"}, headers=bearer(acme.token))
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["run_id"]

    def second_has_read_them() -> bool:
        definition = httpx.get(f"{second.url}/definitions/keyed", headers=bearer(acme.token))
        run = httpx.get(f"{second.url}/runs/{run_id}", headers=bearer(acme.token))
        return definition.status_code == run.status_code == 200 and run.json()["tenant"] == "acme"

    wait_until(second_has_read_them, timeout=30, message="the second replica to read the records")
    other = bearer(globex.token)
    assert httpx.get(f"{second.url}/definitions", headers=other).json() == []
    assert httpx.get(f"{second.url}/definitions/keyed", headers=other).status_code == 404
    assert httpx.get(f"{second.url}/runs/{run_id}", headers=other).status_code == 404
    assert httpx.post(f"{second.url}/runs/{run_id}/stop", headers=other).status_code == 404
    taken = httpx.put(f"{second.url}/definitions/keyed", json=SPEC, headers=other)
    assert taken.status_code == 409, taken.text
    assert records_on(kafka_bootstrap, Topics.DEFINITIONS + topic_suffix) == 1
    [request] = read_requests(kafka_bootstrap, Topics.REQUESTS + topic_suffix, 1)
    assert (request.definition_name, request.tenant) == ("keyed", "acme")
