"""What Kafka security adds, end to end on the secured dev stack (``aoetl dev up --secure``): a broker with
TLS only, each service authenticated as its own SCRAM-SHA-512 user, StandardAuthorizer enforcing the
least-privilege ACLs of ``shared.kafka.acls``.

Short, because it runs in ``make test``: one pipeline through every service with its result and a failed
run's alert read back as the ``cli`` user; the broker refusing a service's writes outside its ACLs; tenants
of the Kafka door, each its own user that may write its own request topic only, whose requests run as
that tenant (a request there claiming another tenant is REJECTED); a wrong
password, and ACLs that do not cover a service's topics, stopping it at start-up with exit code 2 and a
clear message (never the password); nothing printing a secret; and last, the broker's authorizer log
showing no refusal but the ones provoked here, so the grants cover what the services did. The whole e2e
suite runs against such a stack with ``make test-secure`` (``AOETL_TEST_SECURE=1``); this module then
shares the session's secured stack instead of starting one of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.client import AoetlClient
from aoetl.devstack import DevStack, ServiceSupervisor
from aoetl.devstack.errors import StackStartupError
from aoetl.devstack.osproc import free_port, tail
from shared.contracts import Alert, AlertKind, AuditRecord, PipelineRequest, RunStatus
from shared.errors import ConfigurationError
from shared.kafka.access import KafkaUnreachableError, check_access
from shared.kafka.acls import Principal, tenant_user
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import KafkaClients, KafkaDeliveryError, produce_sync
from shared.kafka.topics import Topics, TopicSpec, tenant_requests_topic
from shared.settings import KafkaSettings, ServiceSettings, load_settings
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import (
    assert_completed,
    await_result,
    expected_orders,
    orders_spec,
    run_spec,
    write_orders,
)
from tests.helpers import make_state_dir, wait_until
from tests.support import secure_kafka

pytestmark = [pytest.mark.e2e, pytest.mark.secure]

SERVICES = ("orchestrator", "extract", "transform", "load", "monitor")
TENANTS = ("acme", "globex")  # tenants of the Kafka door: `aoetl dev up --secure --tenant acme ...`
E2E_ENV = {
    # a connection only tenant acme may use: a run that uses it was checked as acme's
    "AOETL_POLICY_CONNECTIONS": json.dumps(
        {
            "default": {"env": "AOETL_POSTGRES_DSN"},
            "acme-pg": {"env": "AOETL_POSTGRES_DSN", "tenants": ["acme"]},
        }
    ),
    "AOETL_LOG_FORMAT": "text",
    "AOETL_SESSION_TIMEOUT_MS": "6000",
    "AOETL_TRANSACTION_TIMEOUT_MS": "10000",
    # the monitor reads the other services' group offsets during the test, so its DESCRIBE grants are used
    "AOETL_LAG_CHECK_INTERVAL_S": "2",
}


@dataclass
class SecureSystem:
    stack: DevStack
    system: System  # the cli user's client, for the helpers of the other e2e modules

    @property
    def dsn(self) -> str:
        return self.stack.endpoints.postgres_dsn


@pytest.fixture(scope="module")
def secure(request: pytest.FixtureRequest) -> Iterator[SecureSystem]:
    own_state: Path | None = None
    if secure_kafka.secure_requested():  # make test-secure: the session's stack is secured already
        stack = secure_kafka.secured(request.getfixturevalue("kafka_bootstrap"))
        assert stack is not None
    else:  # a broker of its own (it must own the broker to secure it), the session's PostgreSQL
        own_state = make_state_dir("aoetl-secure-e2e-")
        postgres_dsn = request.getfixturevalue("postgres_dsn")
        stack = DevStack(own_state, secure=True, external_postgres=postgres_dsn)
    services_state = make_state_dir("aoetl-secure-services-")
    supervisor: ServiceSupervisor | None = None
    client: AoetlClient | None = None
    try:
        stack.up(tenants=TENANTS)
        supervisor = ServiceSupervisor(services_state, stack.endpoints.env())  # the addresses it listens on
        # as every e2e system: one loopback port its http sources may reach (System.allowed_http_port)
        allowed_http_port = free_port()
        egress = {"AOETL_POLICY_HTTP_EGRESS_ALLOW": f"127.0.0.1:{allowed_http_port}"}
        started = []
        for name in SERVICES:
            started += supervisor.start(name, 1, env={**E2E_ENV, **egress, **stack.service_env(name)})
        try:
            supervisor.wait_ready(started, timeout=90)
        except StackStartupError as exc:  # say why: the services' own words
            logs = "\n".join(f"--- {p.name}:\n{tail(Path(p.log), 12)}" for p in started if not p.is_ready())
            raise AssertionError(f"{exc}\n{logs}") from exc
        client = AoetlClient(load_settings(ServiceSettings, kafka=stack.client_settings(Principal.CLI)))
        system = System("", client, supervisor, {}, services_state, allowed_http_port)
        yield SecureSystem(stack, system)
    finally:
        if client is not None:
            client.close()
        if supervisor is not None:
            supervisor.stop()
        shutil.rmtree(services_state, ignore_errors=True)
        if own_state is not None:
            stack.down()
            shutil.rmtree(own_state, ignore_errors=True)


# ------------------------------------------------------------------------------ the flow, secured
def test_a_pipeline_runs_through_every_service_each_as_its_own_user(
    secure: SecureSystem, tmp_path: Path
) -> None:
    rows = write_orders(tmp_path / "in", 3_000, files=2)
    table = f"secure_orders_{uuid.uuid4().hex[:8]}"
    spec = orders_spec(
        "secure-orders",
        {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        {"type": "postgres", "table": table},
        parallelism=2,
    )
    result = run_spec(secure.system, spec)  # submitted, and its result read, as the cli user
    assert_completed(result)
    want = expected_orders(rows)
    with psycopg.connect(secure.dsn) as con:
        got = con.execute(
            f"SELECT count(*), sum(id), sum(qty), sum(round(amount * 100)::bigint), "
            f"count(DISTINCT nullif(customer, '')) FROM {table}"
        ).fetchone()
    assert got is not None
    assert dict(zip(want, got, strict=True)) == want


def test_a_failed_run_raises_the_monitors_alert_read_as_the_cli_user(
    secure: SecureSystem, tmp_path: Path
) -> None:
    with secure.system.client.reader(Topics.ALERTS, from_beginning=False) as alerts:
        result = run_spec(
            secure.system,
            orders_spec(
                "secure-missing",
                {"type": "csv", "path": str(tmp_path / "nope-*.csv")},
                {"type": "jsonl", "path": str(tmp_path)},
            ),
        )
        assert result.status is RunStatus.FAILED
        seen: list[Alert] = []

        def alerted() -> bool:
            seen.extend(
                v
                for _, v in alerts.poll({Topics.ALERTS: Alert})
                if isinstance(v, Alert) and v.run_id == result.run_id
            )
            return bool(seen)

        wait_until(alerted, timeout=30, message="a RUN_FAILED alert")
    assert seen[0].kind is AlertKind.RUN_FAILED


# ------------------------------------------------------------------------------ what security adds
def test_the_broker_serves_authenticated_tls_only(secure: SecureSystem) -> None:
    with pytest.raises(KafkaUnreachableError):  # a plaintext client gets no answer at all
        check_access(KafkaSettings(bootstrap_servers=secure.stack.endpoints.kafka_bootstrap), timeout=3)
    for principal in Principal:  # every principal's own user is let in
        check_access(secure.stack.client_settings(principal), timeout=15)
    # a running broker keeps its mode until it is stopped
    with pytest.raises(ConfigurationError, match="runs secured"):
        DevStack(secure.stack.state_dir, secure=False).up()


def test_every_client_kind_of_the_factory_authenticates_as_its_principal(secure: SecureSystem) -> None:
    """KafkaClients puts TLS and SCRAM on every kind it builds: confluent-kafka's producer, consumer and
    admin, aiokafka's producer, consumer and admin (and faust's broker: the monitor's alert above). Each
    works as a principal whose grants allow just that: load writes a topic outside the system, the
    orchestrator and extract read it, each with the group kind its row names."""
    topic = f"secure.kinds.{uuid.uuid4().hex[:8]}"
    ensure_topics(secure.stack.kafka_settings, [TopicSpec(topic, 1)])  # as the operator
    load, orchestrator, extract = (
        KafkaClients(secure.stack.client_settings(p))
        for p in (Principal.LOAD, Principal.ORCHESTRATOR, Principal.EXTRACT)
    )
    produce_sync(load.producer(), topic, b"confluent", key="k", timeout=15)

    async def with_aiokafka() -> list[bytes]:
        producer = load.aio_producer()
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"aiokafka", key=b"k")
        finally:
            await producer.stop()
        admin = orchestrator.aio_admin()
        await admin.start()
        try:
            assert topic in await admin.list_topics()
        finally:
            await admin.close()
        consumer = orchestrator.aio_consumer(group_id=None)
        await consumer.start()
        try:
            partition = AioTopicPartition(topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            values: list[bytes] = []
            while len(values) < 2:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=15)
                values += [record.value for records in batches.values() for record in records]
            return values
        finally:
            await consumer.stop()

    assert asyncio.run(with_aiokafka()) == [b"confluent", b"aiokafka"]
    assert topic in extract.admin().list_topics(topic, timeout=10).topics
    consumer = extract.consumer(f"aoetl-stream.kinds-{uuid.uuid4().hex[:6]}", partition_eof=True)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: list[bytes] = []

    def both_read() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value() or b"")
        return len(seen) == 2

    try:
        wait_until(both_read, timeout=30, interval=0, message=f"both records on {topic}, read as extract")
    finally:
        consumer.close()
    assert seen == [b"confluent", b"aiokafka"]


@pytest.mark.parametrize("principal", [Principal.TRANSFORM, Principal.LOAD])
def test_the_broker_refuses_a_write_outside_the_principals_acls(
    secure: SecureSystem, principal: Principal
) -> None:
    """Transform never writes results; load may write topics outside the system (Kafka destinations),
    which must still not reach the system's own topics."""
    producer = KafkaClients(secure.stack.client_settings(principal)).producer()
    with pytest.raises(KafkaDeliveryError) as refused:
        produce_sync(producer, Topics.RESULTS, b"forged", key="run", timeout=15)
    assert "Topic authorization failed" in str(refused.value)
    assert Topics.RESULTS in str(refused.value)


def test_reading_a_topic_outside_the_users_acls_is_a_clear_error_not_an_empty_topic(
    secure: SecureSystem,
) -> None:
    """The cli user writes the audit topic (so it may describe it) but never reads it: the broker refuses
    the fetch, which the CLI's reader reports instead of draining "nothing"."""
    refused = pytest.raises(ConfigurationError, match=f"not authorized to read topic '{Topics.AUDIT}'")
    with refused, secure.system.client.reader(Topics.AUDIT, from_beginning=True) as reader:
        list(reader.drain({Topics.AUDIT: AuditRecord}, timeout=30))


# ------------------------------------------------------------------------- tenants on the Kafka door
def test_a_tenants_user_may_write_its_own_request_topic_only(secure: SecureSystem) -> None:
    """Neither another tenant's topic nor the shared requests topic, where the writer names the tenant."""
    producer = KafkaClients(secure.stack.tenant_settings("acme")).producer()
    for topic in (tenant_requests_topic("globex"), Topics.REQUESTS):
        with pytest.raises(KafkaDeliveryError) as refused:
            produce_sync(producer, topic, b"forged", key="run", timeout=15)
        assert "Topic authorization failed" in str(refused.value), topic
        assert topic in str(refused.value)


def test_a_request_on_a_tenants_own_topic_runs_as_that_tenant(secure: SecureSystem, tmp_path: Path) -> None:
    """`aoetl submit` as tenant acme's Kafka user (its request on acme's topic, its audit record first);
    the run uses a connection only acme may use, and its result is read as the operator's `cli`."""
    rows = write_orders(tmp_path / "in", 200, files=1)
    table = f"tenant_orders_{uuid.uuid4().hex[:8]}"
    spec = orders_spec(
        "tenant-orders",
        {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        {"type": "postgres", "table": table, "connection": "acme-pg"},
    )
    spec_file = tmp_path / "pipeline.json"
    spec_file.write_text(json.dumps(spec))
    env = {
        **secure.stack.endpoints.env(),
        **secure.stack.kafka.security.client_env(tenant_user("acme")),
        "AOETL_CONFIG": str(tmp_path / "no-config.toml"),
    }
    with secure.system.client.reader(Topics.RESULTS, from_beginning=False) as results:
        submitted = CliRunner().invoke(app, ["submit", str(spec_file)], env=env)
        assert submitted.exit_code == 0, submitted.output
        run_id = submitted.output.strip().splitlines()[-1]
        assert_completed(await_result(results, run_id))
    with psycopg.connect(secure.dsn) as con:
        loaded = con.execute(f"SELECT count(*), sum(id) FROM {table}").fetchone()
    want = expected_orders(rows)
    assert loaded == (want["count"], want["sum_id"])
    # following a run reads events and results, which a tenant's user may not: said before submitting
    waiting = CliRunner().invoke(app, ["run", str(spec_file)], env=env)
    # one line and the "not authorized" exit code (aoetl.failures), before anything is submitted
    assert waiting.exit_code == 15, waiting.output
    assert "tenant acme's Kafka user submits requests only" in waiting.output


def test_a_request_on_a_tenants_topic_claiming_another_tenant_is_rejected(secure: SecureSystem) -> None:
    acme = AoetlClient(load_settings(ServiceSettings, kafka=secure.stack.tenant_settings("acme")))
    request = PipelineRequest(definition_name="anything", tenant="globex", requested_by="e2e")
    try:
        with secure.system.client.reader(Topics.RESULTS, from_beginning=False) as results:
            produce_sync(
                acme._producer,
                tenant_requests_topic("acme"),
                acme.serde.encode(request),
                key=request.run_id,
                timeout=15,
            )
            result = await_result(results, request.run_id)
    finally:
        acme.close()
    assert result.status is RunStatus.REJECTED
    assert [e.message for e in result.errors] == ["request on tenant acme's topic claims tenant globex"]
    assert result.tenant == "acme"  # the writer's, whom the broker vouches for


def _run_transform(secure: SecureSystem, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **secure.stack.endpoints.env(),
        **E2E_ENV,
        **secure.stack.service_env("transform"),
        "AOETL_SERVICE_NAME": "transform",
        "AOETL_HTTP_PORT": "0",
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.transform"], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_wrong_password_stops_the_service_at_start_up_with_a_clear_error(secure: SecureSystem) -> None:
    wrong = "not-" + uuid.uuid4().hex
    finished = _run_transform(secure, AOETL_KAFKA_SASL_PASSWORD=wrong)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 2, output[-3000:]
    assert "refused user 'transform'" in output and "Authentication failed" in output, output[-3000:]
    assert "Traceback" not in output
    assert wrong not in output and secure.stack.kafka.security.password("transform") not in output


def test_a_service_whose_acls_do_not_cover_its_topics_stops_with_a_clear_error(secure: SecureSystem) -> None:
    finished = _run_transform(secure, AOETL_TOPIC_SUFFIX=".unprovisioned")
    output = finished.stdout + finished.stderr
    assert finished.returncode == 2, output[-3000:]
    assert "does not authorize user 'transform'" in output and "aoetl.schemas.unprovisioned" in output


def test_no_secret_is_printed_and_every_secret_file_is_private(secure: SecureSystem) -> None:
    security = secure.stack.kafka.security
    env = {
        "AOETL_STATE_DIR": str(secure.stack.state_dir),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "AOETL_POSTGRES_DSN": secure.stack.external_postgres or "",
    }
    status = CliRunner().invoke(app, ["dev", "status"], env=env)
    up = CliRunner().invoke(app, ["dev", "up"], env=env)  # adopts the running stack, prints the CLI's lines
    assert up.exit_code == 0, up.output
    assert "AOETL_KAFKA_SASL_USERNAME=cli" in up.output and "$(cat " in up.output
    # the stack remembers its tenants and says how a shell becomes one (the password stays in its file)
    assert "AOETL_KAFKA_SASL_USERNAME=tenant-acme" in up.output, up.output
    assert (security.folder / "tenant-acme.password").read_text() == security.password("tenant-acme")
    assert status.exit_code == 0 and "SASL_SSL" in status.output, status.output
    secrets_ = json.loads(security.credentials_file.read_text()).values()
    for output in (status.output, up.output):
        for secret in (*secrets_, security.tls.keystore_password):
            assert secret not in output
    for path in security.folder.iterdir():
        if path.is_file() and path.name != "ca.pem":
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    assert secure.stack.kafka.config_path.stat().st_mode & 0o077 == 0


def test_the_broker_refused_nothing_but_what_this_module_provoked(secure: SecureSystem) -> None:
    """Run last: every refusal the authorizer logged during the flows above is a missing grant."""
    refused = secure_kafka.refusals(secure.stack)
    unexpected = {r for r in refused if (r[0], r[2]) not in secure_kafka.PROVOKED}
    missing = "\n".join(sorted(map(str, unexpected)))
    assert not unexpected, f"grants missing from shared.kafka.acls:\n{missing}"
    # and the deliberate ones were refused by the broker, not somewhere before it
    assert {(who, resource) for who, _, resource in refused} >= secure_kafka.PROVOKED
