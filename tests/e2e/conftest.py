"""The whole system for end-to-end tests: every service as its own process (two replicas of extract,
transform and load), on the session's real broker and PostgreSQL, on topics and consumer groups of its
own (a unique suffix), so tests in other modules never see its messages. On the secured session stack
(``AOETL_TEST_SECURE=1``) every service authenticates as its own user and the client as the ``cli`` user,
with the ACLs of that suffix (``tests.support.secure_kafka``).

HTTP sources may reach loopback only where the egress allow list says so: each system allow-lists one
port on 127.0.0.1 (``System.allowed_http_port``) for the test servers of its module; any other loopback
port is refused, as it would be in production."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aoetl.client import AoetlClient
from aoetl.devstack.osproc import free_port
from aoetl.devstack.processes import ServiceSupervisor
from services.monitor.configuration import DEFAULT_LAG_GROUPS
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, TopicSpec
from shared.settings import ServiceSettings, load_settings
from tests.helpers import make_state_dir
from tests.support import secure_kafka

REPLICAS = {"orchestrator": 1, "extract": 2, "transform": 2, "load": 2, "monitor": 1}


@dataclass
class System:
    suffix: str
    client: AoetlClient
    supervisor: ServiceSupervisor
    env: dict[str, str]
    state_dir: Path
    allowed_http_port: int  # the one loopback port http sources may reach (AOETL_POLICY_HTTP_EGRESS_ALLOW)
    cli_env: dict[str, str] = field(default_factory=dict)  # the CLI user's Kafka settings (secured stack)


def start_system(
    kafka_bootstrap: str,
    postgres_dsn: str,
    replicas: dict[str, int],
    extra_env: dict[str, str] | None = None,
) -> System:
    """``extra_env`` is given to every service, after (so over) the defaults."""
    suffix = f".e2e{uuid.uuid4().hex[:8]}"
    allowed_http_port = free_port()
    ensure_topics(
        secure_kafka.operator_settings(kafka_bootstrap),
        [TopicSpec(t.name + suffix, t.partitions, t.config, t.doc) for t in TOPICS],
    )
    secure_kafka.provision(kafka_bootstrap, suffix)
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
        "AOETL_POLICY_HTTP_EGRESS_ALLOW": f"127.0.0.1:{allowed_http_port}",
        **(extra_env or {}),
    }
    supervisor = secure_kafka.supervisor(state_dir, env, kafka_bootstrap)
    started = []
    for name, count in replicas.items():
        started += supervisor.start(name, count, env=_group_env(kafka_bootstrap, name, suffix))
    supervisor.wait_ready(started, timeout=90)
    kafka = secure_kafka.cli_settings(kafka_bootstrap)
    settings = load_settings(ServiceSettings, kafka=kafka, topic_suffix=suffix)
    cli_env = secure_kafka.cli_env(kafka_bootstrap)
    return System(suffix, AoetlClient(settings), supervisor, env, state_dir, allowed_http_port, cli_env)


def _group_env(kafka_bootstrap: str, name: str, suffix: str) -> dict[str, str]:
    if name == "monitor" and secure_kafka.secured(kafka_bootstrap):
        # as a deployment with a suffix runs it, the name its grants carry: the monitor's app id appends
        # the suffix itself, and the groups it watches are the suffixed ones
        lag_groups = [group + suffix for group in DEFAULT_LAG_GROUPS]
        return {"AOETL_GROUP_ID": "aoetl-monitor", "AOETL_LAG_GROUPS": json.dumps(lag_groups)}
    return {"AOETL_GROUP_ID": f"aoetl-{name}{suffix}"}


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
