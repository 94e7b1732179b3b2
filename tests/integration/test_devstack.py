"""The dev stack in its own private state folder: never the shared dev broker, never the session stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.devstack import DevStack
from aoetl.failures import EXIT_AUTHENTICATION
from shared.kafka.access import check_access
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, Topics
from shared.settings import KafkaSettings, load_settings
from tests.helpers import make_state_dir, wait_until

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = make_state_dir("aoetl-devstack-test-")
    yield path
    DevStack(path).down()  # a failing assertion must not leak a broker
    shutil.rmtree(path, ignore_errors=True)


def test_up_status_idempotent_up_down_and_restart(state_dir: Path) -> None:
    stack = DevStack(state_dir)
    endpoints = stack.up()

    rows = {row.component: row for row in DevStack(state_dir).status()}
    assert rows["kafka"].healthy and rows["kafka"].address == endpoints.kafka_bootstrap
    assert rows["postgres"].healthy and rows["postgres"].address == endpoints.postgres_dsn
    kafka_pid, postgres_pid = rows["kafka"].pid, rows["postgres"].pid
    assert kafka_pid and postgres_pid
    assert endpoints.kafka_bootstrap != "127.0.0.1:19092"
    topics = AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap}).list_topics(timeout=10).topics
    assert {spec.name for spec in TOPICS} <= set(topics)
    assert ensure_topics(KafkaSettings(bootstrap_servers=endpoints.kafka_bootstrap)) == []  # idempotent
    with psycopg.connect(endpoints.postgres_dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("aoetl",)

    # A second `up` (a fresh object, as from another process) adopts the running servers.
    again = DevStack(state_dir).up()
    assert again == endpoints
    rows = {row.component: row for row in DevStack(state_dir).status()}
    assert (rows["kafka"].pid, rows["postgres"].pid) == (kafka_pid, postgres_pid)

    DevStack(state_dir).down()
    assert _gone(kafka_pid) and _gone(postgres_pid)
    assert not any(row.healthy or row.pid for row in DevStack(state_dir).status())

    restarted = DevStack(state_dir).up()
    rows = {row.component: row for row in DevStack(state_dir).status()}
    assert rows["kafka"].healthy and rows["postgres"].healthy
    assert rows["kafka"].pid != kafka_pid
    assert set(
        AdminClient({"bootstrap.servers": restarted.kafka_bootstrap}).list_topics(timeout=10).topics
    ) >= {spec.name for spec in TOPICS}


def _exports(output: str) -> dict[str, str]:
    """What `eval "$(aoetl dev up)"` would set, by running the printed lines in a real shell."""
    script = output + '\nenv | grep -E "^(KAFKA_BOOTSTRAP_SERVERS|AOETL_)"'
    env = {"PATH": os.environ["PATH"]}  # nothing else: only what the lines set comes back
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=env)
    return dict(line.split("=", 1) for line in shell.stdout.splitlines())


@pytest.mark.secure
@pytest.mark.slow  # two broker starts more: in `make test-secure` (make test has test_secure_stack.py)
def test_dev_up_secure_prints_a_working_cli_environment_then_plaintext_again(state_dir: Path) -> None:
    env = {"AOETL_STATE_DIR": str(state_dir), "KAFKA_BOOTSTRAP_SERVERS": "", "AOETL_POSTGRES_DSN": ""}
    up = CliRunner().invoke(app, ["dev", "up", "--secure"], env=env)
    assert up.exit_code == 0, up.output
    stack = DevStack(state_dir)  # the mode is remembered in the state folder
    assert stack.secure
    for secret in json.loads(stack.kafka.security.credentials_file.read_text()).values():
        assert secret not in up.output
    # the printed lines give the CLI its own user; the password comes from a 0600 file, not the terminal
    exported = _exports(up.stdout)
    assert exported["AOETL_KAFKA_SASL_USERNAME"] == "cli"
    assert exported["AOETL_KAFKA_SASL_PASSWORD"] == stack.kafka.security.password("cli")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in exported.items():
            mp.setenv(key, value)
        check_access(load_settings(KafkaSettings), [Topics.RESULTS], timeout=15)
    # the CLI with a wrong password: one line naming the fix, the exit code of refused credentials, fast
    wrong = f"wrong-{uuid.uuid4().hex}"
    started = time.monotonic()
    refused = CliRunner().invoke(
        app, ["status", "some-run"], env={**env, **exported, "AOETL_KAFKA_SASL_PASSWORD": wrong}
    )
    assert refused.exit_code == EXIT_AUTHENTICATION, refused.output
    assert "refused the credentials of user 'cli'" in refused.output and "Traceback" not in refused.output
    assert wrong not in refused.output and len(refused.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 10
    status = CliRunner().invoke(app, ["dev", "status"], env=env)
    assert status.exit_code == 0 and "SASL_SSL" in status.output, status.output
    switched = CliRunner().invoke(app, ["dev", "up", "--plaintext"], env=env)
    assert switched.exit_code == 2 and "runs secured" in switched.output, switched.output
    assert CliRunner().invoke(app, ["dev", "down"], env=env).exit_code == 0

    # the same data folder, plaintext again: what `make test` and the demo use
    plain = DevStack(state_dir, secure=False).up()
    assert not DevStack(state_dir).secure
    topics = AdminClient({"bootstrap.servers": plain.kafka_bootstrap}).list_topics(timeout=10).topics
    assert {spec.name for spec in TOPICS} <= set(topics)


@pytest.mark.slow  # a broker, PostgreSQL and 12 service processes more: in `make test-slow`
def test_dev_up_with_services_and_two_replicas_starts_healthy_with_an_api_port_per_gateway(
    state_dir: Path, tmp_path: Path
) -> None:
    """As the README shows it: `aoetl dev up --services --replicas 2`. Both gateway replicas listen for
    the API (the first on the configured port, the second on one of its own) and `dev status` shows
    those addresses, not only the probes' port."""
    from aoetl.devstack.osproc import free_port

    api_port = free_port()  # the configured port: 8000 may be another stack's on this machine
    env = {
        "AOETL_STATE_DIR": str(state_dir),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "AOETL_POSTGRES_DSN": "",
        "AOETL_CONFIG": str(tmp_path / "config.toml"),
        "AOETL_API_PORT": str(api_port),
        "COLUMNS": "250",
    }
    up = CliRunner().invoke(app, ["dev", "up", "--services", "--replicas", "2", "--timeout", "240"], env=env)
    assert up.exit_code == 0, up.output
    gateways = sorted(
        (p for p in DevStack(state_dir).supervisor.alive() if p.name == "gateway"), key=lambda p: p.replica
    )
    assert [p.replica for p in gateways] == [0, 1]
    urls = [p.api_url for p in gateways]
    assert urls[0] == f"http://127.0.0.1:{api_port}" and urls[1] and urls[1] != urls[0], urls
    for url in urls:
        assert "# gateway[" in up.stdout and f"API on {url}" in up.stdout
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # the API itself answers

    # every component healthy, 2 replicas of each service. Awaited: a consumer group that the last replica
    # joined rebalances, and a replica is not ready while it does (the monitor's faust tables recover)
    shown: list[Any] = []

    def all_healthy() -> bool:
        shown[:] = [CliRunner().invoke(app, ["dev", "status"], env=env)]
        return shown[0].exit_code == 0

    wait_until(all_healthy, timeout=90, interval=1, message="every replica healthy in `aoetl dev status`")
    status = shown[0]
    for url in urls:
        assert f"API {url}" in status.output, status.output
    assert CliRunner().invoke(app, ["dev", "down"], env=env).exit_code == 0
    assert not DevStack(state_dir).supervisor.alive()
