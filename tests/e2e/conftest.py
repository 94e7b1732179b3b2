"""The whole system for end-to-end tests: every service as its own process (two replicas of extract,
transform and load), on the session's real broker and PostgreSQL, on topics and consumer groups of its
own (a unique suffix), so tests in other modules never see its messages."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aoetl.client import AoetlClient
from aoetl.devstack.processes import ServiceSupervisor
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, TopicSpec
from shared.settings import KafkaSettings, ServiceSettings, load_settings
from tests.helpers import make_state_dir

REPLICAS = {"orchestrator": 1, "extract": 2, "transform": 2, "load": 2, "monitor": 1}


@dataclass
class System:
    suffix: str
    client: AoetlClient
    supervisor: ServiceSupervisor
    env: dict[str, str]
    state_dir: Path


def start_system(kafka_bootstrap: str, postgres_dsn: str, replicas: dict[str, int]) -> System:
    suffix = f".e2e{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [TopicSpec(t.name + suffix, t.partitions, t.config, t.doc) for t in TOPICS])
    state_dir = make_state_dir("aoetl-e2e-")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_POSTGRES_DSN": postgres_dsn,
        "AOETL_TOPIC_SUFFIX": suffix,
        "AOETL_LOG_FORMAT": "text",
        "AOETL_MONITOR_STUCK_CHECK_INTERVAL_S": "1",
        # a killed replica's partitions move, and its open transaction is aborted, within seconds
        "AOETL_SESSION_TIMEOUT_MS": "6000",
        "AOETL_TRANSACTION_TIMEOUT_MS": "10000",
    }
    supervisor = ServiceSupervisor(state_dir, env)
    started = []
    for name, count in replicas.items():
        started += supervisor.start(name, count, env={"AOETL_GROUP_ID": f"aoetl-{name}{suffix}"})
    supervisor.wait_ready(started, timeout=90)
    settings = load_settings(ServiceSettings, kafka=kafka, topic_suffix=suffix)
    return System(suffix, AoetlClient(settings), supervisor, env, state_dir)


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, postgres_dsn: str, monkeypatch_module) -> Iterator[System]:
    monkeypatch_module.setenv("AOETL_POSTGRES_DSN", postgres_dsn)
    sys_ = start_system(kafka_bootstrap, postgres_dsn, REPLICAS)
    try:
        yield sys_
    finally:
        sys_.client.close()
        sys_.supervisor.stop()
        shutil.rmtree(sys_.state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
