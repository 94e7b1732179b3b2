"""Which stack the tests run against: ``AOETL_STACK_BACKEND=auto|local|testcontainers|external``.

* ``external``: ``KAFKA_BOOTSTRAP_SERVERS`` and ``AOETL_POSTGRES_DSN`` must both be set; nothing is started.
* ``local``: :class:`DevStack` processes (Kafka jars + PostgreSQL binaries), no Docker needed.
* ``testcontainers``: ``apache/kafka`` and ``postgres`` containers.
* ``auto`` (default): testcontainers when a Docker engine answers, local otherwise.

In every backend a variable that is set wins for its component, so a developer can point tests at the
shared broker while still getting a private database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from aoetl.devstack.errors import StackStartupError
from aoetl.devstack.kafka import kafka_ready, private_broker_settings
from aoetl.devstack.kafka_jars import KAFKA_VERSION
from aoetl.devstack.osproc import free_port, wait_for
from aoetl.devstack.postgres import DATABASE, postgres_ready
from aoetl.devstack.stack import DevStack, StackEndpoints
from shared.errors import ConfigurationError
from shared.kafka.admin import ensure_topics
from shared.settings import KafkaSettings, load_settings

KAFKA_IMAGE: Final = f"apache/kafka:{KAFKA_VERSION}"
POSTGRES_IMAGE: Final = "postgres:16"


class Backend(StrEnum):
    AUTO = "auto"
    LOCAL = "local"
    TESTCONTAINERS = "testcontainers"
    EXTERNAL = "external"


def docker_available() -> bool:
    """A Docker engine answers (not merely: the CLI is installed)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_backend(requested: str | None = None) -> Backend:
    raw = (requested or os.environ.get("AOETL_STACK_BACKEND") or Backend.AUTO).lower()
    try:
        backend = Backend(raw)
    except ValueError as exc:
        choices = ", ".join(b.value for b in Backend)
        raise ConfigurationError(f"AOETL_STACK_BACKEND={raw!r} is not one of {choices}") from exc
    if backend is Backend.AUTO:
        return Backend.TESTCONTAINERS if docker_available() else Backend.LOCAL
    return backend


@contextmanager
def running_stack(
    state_dir: Path, backend: str | None = None, timeout: float = 120.0, *, brokers: int | None = None
) -> Iterator[StackEndpoints]:
    """Yield endpoints of a ready stack with all topics created; stop what was started on exit.
    ``brokers`` > 1: the local backend runs a KRaft cluster of that many brokers."""
    kafka_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    postgres_env = os.environ.get("AOETL_POSTGRES_DSN") or None
    chosen = choose_backend(backend)
    if chosen is Backend.EXTERNAL:
        if not (kafka_env and postgres_env):
            raise ConfigurationError(
                "backend 'external' needs KAFKA_BOOTSTRAP_SERVERS and AOETL_POSTGRES_DSN"
            )
        yield _external_endpoints(_env_kafka(kafka_env), postgres_env, timeout)
    elif chosen is Backend.TESTCONTAINERS:
        with _containers(kafka_env, postgres_env, timeout) as endpoints:
            yield endpoints
    else:
        stack = DevStack(state_dir, external_kafka=kafka_env, external_postgres=postgres_env, brokers=brokers)
        try:
            yield stack.up(timeout)
        finally:
            stack.down()


def _env_kafka(bootstrap: str) -> KafkaSettings:
    """A broker named by the environment is reached with the environment's security settings."""
    return load_settings(KafkaSettings, bootstrap_servers=bootstrap)


def _external_endpoints(kafka: KafkaSettings, dsn: str, timeout: float) -> StackEndpoints:
    bootstrap = kafka.bootstrap_servers
    wait_for(lambda: kafka_ready(kafka), timeout=timeout, what=f"Kafka at {bootstrap}")
    wait_for(lambda: postgres_ready(dsn), timeout=timeout, what="PostgreSQL at AOETL_POSTGRES_DSN")
    ensure_topics(kafka)
    return StackEndpoints(bootstrap, dsn)


@contextmanager
def _containers(kafka_env: str | None, postgres_env: str | None, timeout: float) -> Iterator[StackEndpoints]:
    with ExitStack() as stack:
        # the container is ours and listens PLAINTEXT, like the local stack's broker
        kafka = _env_kafka(kafka_env) if kafka_env else private_broker_settings(_start_kafka_container(stack))
        dsn = postgres_env or _start_postgres_container(stack)
        yield _external_endpoints(kafka, dsn, timeout)


def _start_kafka_container(stack: ExitStack) -> str:
    from testcontainers.core.container import DockerContainer

    # The advertised listener must name the host-side port, so bind a known free port instead of letting
    # Docker pick one after the configuration is fixed.
    host_port = free_port()
    env: dict[str, Any] = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{host_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_MESSAGE_MAX_BYTES": str(20 * 1024 * 1024),
        "KAFKA_REPLICA_FETCH_MAX_BYTES": str(20 * 1024 * 1024),
    }
    container = DockerContainer(KAFKA_IMAGE).with_envs(**env).with_bind_ports(9092, host_port)
    stack.enter_context(container)
    return f"127.0.0.1:{host_port}"


def _start_postgres_container(stack: ExitStack) -> str:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname=DATABASE)
    stack.enter_context(container)
    url = container.get_connection_url(driver=None)
    if not url:
        raise StackStartupError("postgres container reported no connection URL")
    return str(url)
