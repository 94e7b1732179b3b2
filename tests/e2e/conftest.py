"""The whole system for end-to-end tests: every service as its own process (two replicas of extract,
transform and load), on the session's real broker and PostgreSQL, on topics and consumer groups of its
own (a unique suffix), so tests in other modules never see its messages. On the secured session stack
(``AOETL_TEST_SECURE=1``) every service authenticates as its own user and the client as the ``cli`` user,
with the ACLs of that suffix (``tests.support.secure_kafka``).

HTTP sources may reach loopback only where the egress allow list says so: each system allow-lists one
port on 127.0.0.1 (``System.allowed_http_port``) for the test servers of its module; any other loopback
port is refused, as it would be in production.

Starting a system (eight service processes on a 2-core machine) costs 10-20 s, so the modules that need
nothing special share one: ``system``, started by the first test that asks for it and stopped after the
last test of this package (package scope rather than session scope, so that it does not idle under the
fault and integration tests that come after). Tests on it are independent by construction, not by order:
each uses run ids, pipeline, definition, table and topic names of its own, and reads the system's topics
from the offsets it starts at (or filters what it reads from the beginning by its own run ids). A module
that needs other settings (planted secrets, a broker of its own) starts its own system with
``running_system``, for as long as it needs it."""

from __future__ import annotations

import contextlib
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

# Two replicas of each data stage, so that work is shared and partitions are handed over; the monitor, so
# that alerts are raised.
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
        # every stage a process of its own, as the suites' faults and checks of the transform service
        # need; the chained topology (extract runs the transform: the services' default) has its own tests
        "AOETL_CHAIN_TRANSFORM": "false",
        **(extra_env or {}),
    }
    supervisor = secure_kafka.supervisor(state_dir, env, kafka_bootstrap)
    started = []
    for name, count in replicas.items():
        started += supervisor.start(name, count, env=group_env(kafka_bootstrap, name, suffix))
    supervisor.wait_ready(started, timeout=90)
    kafka = secure_kafka.cli_settings(kafka_bootstrap)
    settings = load_settings(ServiceSettings, kafka=kafka, topic_suffix=suffix)
    cli_env = secure_kafka.cli_env(kafka_bootstrap)
    return System(suffix, AoetlClient(settings), supervisor, env, state_dir, allowed_http_port, cli_env)


def group_env(kafka_bootstrap: str, name: str, suffix: str) -> dict[str, str]:
    if name == "monitor" and secure_kafka.secured(kafka_bootstrap):
        # as a deployment with a suffix runs it, the name its grants carry: the monitor's app id appends
        # the suffix itself, and the groups it watches are the suffixed ones
        lag_groups = [group + suffix for group in DEFAULT_LAG_GROUPS]
        return {"AOETL_GROUP_ID": "aoetl-monitor", "AOETL_LAG_GROUPS": json.dumps(lag_groups)}
    return {"AOETL_GROUP_ID": f"aoetl-{name}{suffix}"}


@contextlib.contextmanager
def running_system(
    kafka_bootstrap: str,
    postgres_dsn: str,
    replicas: dict[str, int] = REPLICAS,
    extra_env: dict[str, str] | None = None,
) -> Iterator[System]:
    """A system of its own (``start_system``), stopped and its state removed when the block ends."""
    system = start_system(kafka_bootstrap, postgres_dsn, replicas, extra_env)
    try:
        yield system
    finally:
        system.client.close()
        system.supervisor.stop()
        shutil.rmtree(system.state_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def system(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[System]:
    """The system the e2e modules share (see the module docstring). The test process gets the system's
    DSN too, for the CLI commands the tests run in process."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AOETL_POSTGRES_DSN", postgres_dsn)
    try:
        with running_system(kafka_bootstrap, postgres_dsn) as shared:
            yield shared
    finally:
        patch.undo()
