"""The dev stack in its own private state folder: never the shared dev broker, never the session stack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from aoetl.devstack import DevStack
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS
from shared.settings import KafkaSettings
from tests.helpers import make_state_dir

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
