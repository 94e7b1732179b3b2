"""Secrets only through named connections, http egress, and secrets that never leave: attacks against the
running services (every service its own process, plus the gateway).

Known secrets are planted where an operator would put them (a DSN password in the system's own DSN, a
malformed DSN of a declared connection, an HTTP token, the Kafka SASL password, a webhook secret); runs
that would echo them are driven to fail (bad DSN as source and as destination, an HTTP source whose server
echoes the token back, refused egress); then every output is searched for them: every topic of the
system (results, events, dead letters, alerts... read uncommitted, aborted writes included), every
service's log file, the CLI's output and the gateway's ``GET /runs/{id}``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg.conninfo import make_conninfo

from aoetl.devstack.osproc import free_port
from shared.contracts import Alert, DeadLetter, PipelineResult, RunStatus
from shared.kafka.topics import TOPICS, Topics
from tests.e2e.conftest import System, running_system
from tests.e2e.test_pipelines import run_spec, write_orders
from tests.helpers import wait_until
from tests.integration.test_gateway import seed_key
from tests.support import secure_kafka
from tests.support.json_http import JsonServer, Reply, Request, json_server

pytestmark = pytest.mark.e2e

REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 1, "load": 1, "monitor": 1}
PLANTED = {
    "postgres password": "Planted-Pg-Pw-2q7",
    "bad DSN password": "Planted-Bad-Pw-3r8",
    "http token": "Planted-Api-Token-4s9",
    "SASL password": "Planted-Sasl-Pw-1p6",
    "webhook secret": "whsec_Planted-Webhook-5t0",
}
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ the system
@dataclass
class Secured:
    system: System
    api: str  # the gateway
    env: dict[str, str]  # what the services were given, for the CLI
    auth: dict[str, str]  # an admin's Authorization header for the gateway's REST endpoints


@pytest.fixture(scope="module")
def secured(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[Secured]:
    env = {
        # the system's own DSN, with a password (the dev PostgreSQL trusts local connections)
        "AOETL_POSTGRES_DSN": make_conninfo(postgres_dsn, password=PLANTED["postgres password"]),
        "AOETL_TEST_BAD_DSN": f"postgresql://etl:{PLANTED['bad DSN password']}%zz@127.0.0.1:1/aoetl",
        "AOETL_TEST_API_TOKEN": f"Bearer {PLANTED['http token']}",
        # set, not used: on the plaintext broker none is asked for; on the secured stack (make test-secure)
        # each service is started with its own user's password over this one
        "AOETL_KAFKA_SASL_PASSWORD": PLANTED["SASL password"],
        "AOETL_POLICY_CONNECTIONS": json.dumps(
            {
                "default": {"env": "AOETL_POSTGRES_DSN"},
                "bad-dsn": {"env": "AOETL_TEST_BAD_DSN"},
                "token-api": {"kind": "http", "env": "AOETL_TEST_API_TOKEN", "hosts": ["127.0.0.1"]},
            }
        ),
        "AOETL_WEBHOOKS": json.dumps(
            {"billing": {"scheme": "stripe", "secrets": [PLANTED["webhook secret"]]}}
        ),
    }
    api_port = free_port()
    with running_system(kafka_bootstrap, postgres_dsn, REPLICAS, extra_env=env) as system:
        # an admin key of the default tenant (the CLI's runs are its), on the keys topic before the start
        admin = seed_key(system.env["KAFKA_BOOTSTRAP_SERVERS"], system.suffix)
        gateway = system.supervisor.start(
            "gateway", 1, env={"AOETL_API_PORT": str(api_port), "AOETL_AUTH_API_KEYS": "true"}
        )
        system.supervisor.wait_ready(gateway, timeout=60)
        auth = {"Authorization": f"Bearer {admin.token}"}
        yield Secured(system, f"http://127.0.0.1:{api_port}", system.env, auth)


# ------------------------------------------------------------------------------------------ test servers
def respond(request: Request) -> Reply:
    if request.path == "/records":
        return Reply(200, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    if request.path == "/redirect":
        return Reply(302, {}, {"Location": request.query["to"]})
    if request.path == "/echo-auth":  # a hostile or careless server: the token comes back
        return Reply(403, {"error": "forbidden", "you sent": request.authorization})
    return Reply(404, {})


def sent(server: JsonServer) -> list[tuple[str, str | None]]:
    """What ``server`` received: (path, Authorization) of each request."""
    return [(r.path, r.authorization) for r in server.requests]


@pytest.fixture
def allowed(secured: Secured) -> Iterator[JsonServer]:
    """A server on the one loopback port the system's egress allow list opens."""
    with json_server(respond, secured.system.allowed_http_port) as server:
        yield server


@pytest.fixture
def forbidden() -> Iterator[JsonServer]:
    """A server on another loopback port: nothing may reach it."""
    with json_server(respond) as server:
        yield server


def spec(
    name: str, source: dict[str, Any], tmp_path: Path, destination: dict[str, Any] | None = None
) -> dict:
    return {
        "name": f"{name}-{uuid.uuid4().hex[:6]}",
        "source": source,
        "destination": destination or {"type": "jsonl", "path": str(tmp_path / "out")},
        "run": {"max_retries": 0},
    }


def errors_of(result: PipelineResult) -> list[tuple[str | None, str, str]]:
    return [(e.path, e.error_class, e.message) for e in result.errors]


def assert_no_secret(text: str, where: str) -> None:
    leaked = [what for what, value in PLANTED.items() if value in text]
    assert not leaked, f"{leaked} found in {where}"


# ------------------------------------------------------------------------------------------ attacks
def test_auth_env_naming_the_sasl_password_is_rejected(
    secured: Secured, allowed: JsonServer, tmp_path: Path
) -> None:
    source = {"type": "http", "url": f"{allowed.base}/records", "auth_env": "AOETL_KAFKA_SASL_PASSWORD"}
    result = run_spec(secured.system, spec("steal-sasl", source, tmp_path))
    assert result.status is RunStatus.REJECTED, errors_of(result)
    [(path, error_class, message)] = errors_of(result)
    assert path == "spec.source.auth_env" and error_class == "PolicyViolation", message
    assert allowed.requests == []  # nothing was sent anywhere


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:{port}/records", "http://0x7f000001:{port}/records", "http://[::1]:{port}/records",
     "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
     "http://[fd00:ec2::254]/latest/meta-data/"],
    ids=["loopback", "hex-loopback", "v6-loopback", "metadata", "metadata-v6"],
)  # fmt: skip
def test_an_http_source_to_loopback_or_metadata_is_rejected(
    secured: Secured, forbidden: JsonServer, tmp_path: Path, url: str
) -> None:
    result = run_spec(
        secured.system, spec("egress", {"type": "http", "url": url.format(port=forbidden.port)}, tmp_path)
    )
    assert result.status is RunStatus.REJECTED, errors_of(result)
    assert [path for path, _, _ in errors_of(result)] == ["spec.source.url"]
    assert forbidden.requests == []


def test_a_redirect_to_a_loopback_port_that_is_not_allowed_is_refused(
    secured: Secured, allowed: JsonServer, forbidden: JsonServer, tmp_path: Path
) -> None:
    url = f"{allowed.base}/redirect?to={forbidden.base}/records"
    result = run_spec(secured.system, spec("redirect", {"type": "http", "url": url}, tmp_path))
    assert result.status is RunStatus.FAILED, errors_of(result)
    assert any(c == "EgressRefusedError" and "redirect" in m for _, c, m in errors_of(result)), errors_of(
        result
    )
    assert [r.path for r in allowed.requests] == ["/redirect"]
    assert forbidden.requests == []


def test_a_bad_dsn_fails_the_run_without_its_password(secured: Secured, tmp_path: Path) -> None:
    """A spec from before connections (``dsn_env``) naming the variable of a declared connection is that
    connection; its DSN does not parse, and libpq's message would quote the password."""
    source = {"type": "postgres", "table": "public.anything", "dsn_env": "AOETL_TEST_BAD_DSN"}
    result = run_spec(secured.system, spec("bad-dsn", source, tmp_path))
    assert result.status is RunStatus.FAILED, errors_of(result)
    assert any("malformed" in m and "bad-dsn" in m for _, _, m in errors_of(result)), errors_of(result)
    assert_no_secret(result.model_dump_json(), "the result")

    def failed_view() -> httpx.Response | None:
        r = httpx.get(f"{secured.api}/runs/{result.run_id}", headers=secured.auth, timeout=5)
        return r if r.status_code == 200 and r.json().get("status") == "FAILED" else None

    view = wait_until(failed_view, 30, message="the gateway's run view")
    assert_no_secret(view.text, "GET /runs/{id}")


# ------------------------------------------------------------------------------------------ every output
def test_no_planted_secret_reaches_any_output(secured: Secured, allowed: JsonServer, tmp_path: Path) -> None:
    system = secured.system
    orders = tmp_path / "in"
    write_orders(orders, 300, files=1)
    csv_source = {"type": "csv", "path": str(orders / "*.csv")}
    failing = {
        "bad-dsn-destination": spec(
            "leak-dest",
            csv_source,
            tmp_path,
            {"type": "postgres", "table": "leak_out", "connection": "bad-dsn"},
        ),
        "bad-dsn-source": spec(
            "leak-src", {"type": "postgres", "table": "t", "connection": "bad-dsn"}, tmp_path
        ),
        "echoed-token": spec(
            "leak-token",
            {"type": "http", "url": f"{allowed.base}/echo-auth", "connection": "token-api"},
            tmp_path,
        ),
    }
    results = {what: run_spec(system, body) for what, body in failing.items()}
    for what, result in results.items():
        assert result.status is RunStatus.FAILED, (what, errors_of(result))
    assert ("/echo-auth", f"Bearer {PLANTED['http token']}") in sent(allowed)  # the token was used...
    completed = run_spec(
        system,
        spec("ok-default", csv_source, tmp_path, {"type": "postgres", "table": f"ok_{uuid.uuid4().hex[:6]}"}),
    )
    assert completed.status is RunStatus.COMPLETED, errors_of(completed)  # ...and the default DSN works

    # the outputs that only follow later: dead letters of the failed tasks and batches, alerts per run
    failed_ids = {r.run_id for r in results.values()}
    wait_until(lambda: failed_ids <= alert_runs(system), 60, message="a RUN_FAILED alert per failed run")
    wait_until(lambda: len(dead_letter_runs(system) & failed_ids) >= 2, 60, message="dead letters")
    bad_signature = httpx.post(
        f"{secured.api}/webhooks/billing",
        content=b'{"id": "evt_1"}',
        headers={"Stripe-Signature": "t=1,v1=00"},
    )
    assert bad_signature.status_code in (400, 401)

    outputs: dict[str, str] = {}
    for topic, values in raw_topics(system).items():
        outputs[f"topic {topic}"] = "\n".join(v.decode("utf-8", "replace") for v in values)
    for log in sorted((system.state_dir / "logs").glob("*.log")):
        outputs[f"log {log.name}"] = log.read_text(errors="replace")
    commands = [["status", run_id] for run_id in [*failed_ids, completed.run_id]]
    commands += [["results", "--json"], ["alerts", "--json"], ["dlq", "list"], ["dev", "status"]]
    # eight CLI processes, a few seconds of start-up each: side by side, not one after another
    with ThreadPoolExecutor(max_workers=4) as pool:
        printed = pool.map(lambda command: cli(secured, tmp_path, *command), commands)
        for command, text in zip(commands, printed, strict=True):
            outputs["aoetl " + " ".join(command)] = text
    for run_id in [*failed_ids, completed.run_id]:
        view = httpx.get(f"{secured.api}/runs/{run_id}", headers=secured.auth, timeout=5)
        assert view.status_code == 200, view.text  # the run view itself is searched, not a refusal
        outputs[f"GET /runs/{run_id}"] = view.text
    for path, field in (("/alerts", "alerts"), ("/dead-letters", "dead_letters"), ("/runs", "runs")):
        seen: dict[str, str] = {}

        def listed(path: str = path, field: str = field, seen: dict[str, str] = seen) -> bool:
            # the gateway follows these topics: searched once it shows the failed runs' records
            answer = httpx.get(f"{secured.api}{path}", params={"limit": 200}, headers=secured.auth, timeout=5)
            assert answer.status_code == 200, answer.text
            seen["text"] = answer.text
            return bool({item["run_id"] for item in answer.json()[field]} & failed_ids)

        wait_until(listed, timeout=60, message=f"GET {path} listing the failed runs' records")
        outputs[f"GET {path}"] = seen["text"]

    assert len([k for k in outputs if k.startswith("log ")]) >= len(REPLICAS)
    assert "malformed" in outputs[f"aoetl status {results['bad-dsn-source'].run_id}"]  # real output
    for where, text in outputs.items():
        assert_no_secret(text, where)


def raw_topics(system: System) -> dict[str, list[bytes]]:
    """Every key and value of every topic of the system, aborted transactions included (read as the
    operator: on a secured broker no service or CLI user may read them all)."""
    kafka = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
    consumer = Consumer(
        {
            **kafka.to_confluent(),
            "group.id": f"secret-scan-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,  # the end of a partition, past its transaction markers too
        }
    )
    try:
        topics = [t.name + system.suffix for t in TOPICS]
        pending: set[tuple[str, int]] = set()
        assignment = []
        metadata = consumer.list_topics(timeout=10).topics
        for topic in topics:
            for partition in metadata[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > low:
                    pending.add((topic, partition))
                    assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        out: dict[str, list[bytes]] = {t: [] for t in topics}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                pending.discard((message.topic() or "", message.partition() or 0))
            elif error is None:
                out[message.topic() or ""].extend(b for b in (message.key(), message.value()) if b)
        assert not pending, f"could not read to the end of {sorted(pending)}"
        assert out[system.suffix and Topics.RESULTS + system.suffix], "the scan reads real messages"
        return out
    finally:
        consumer.close()


def alert_runs(system: System) -> set[str]:
    with system.client.reader(Topics.ALERTS, from_beginning=True) as reader:
        return {
            v.run_id for _, v in reader.drain({Topics.ALERTS: Alert}) if isinstance(v, Alert) and v.run_id
        }


def dead_letter_runs(system: System) -> set[str]:
    with system.client.reader(Topics.DEAD_LETTERS, from_beginning=True) as reader:
        return {
            v.run_id
            for _, v in reader.drain({Topics.DEAD_LETTERS: DeadLetter})
            if isinstance(v, DeadLetter) and v.run_id
        }


def cli(secured: Secured, tmp_path: Path, *args: str) -> str:
    """The CLI as a user runs it, in the services' environment (their secrets included), as the cli user
    on a secured broker."""
    env = {
        **os.environ,
        **secured.env,
        **secured.system.cli_env,
        "PYTHONPATH": str(REPO),
        "AOETL_STATE_DIR": str(tmp_path / "cli-state"),
        "COLUMNS": "250",
    }
    done = subprocess.run(
        [sys.executable, "-m", "aoetl.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    return done.stdout + done.stderr
