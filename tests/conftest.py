"""Session fixtures for the real stack.

``kafka_bootstrap`` / ``postgres_dsn`` start a private Kafka broker and PostgreSQL cluster (concurrently,
once per session, only when a test asks for either), or use ``KAFKA_BOOTSTRAP_SERVERS`` /
``AOETL_POSTGRES_DSN`` when set. ``AOETL_STACK_BACKEND`` picks local processes or testcontainers (see
``aoetl/devstack/backend.py``). All topics of ``shared/kafka/topics.py`` exist before the first test runs.
With ``AOETL_TEST_SECURE=1`` (``make test-secure``) the session's broker is the secured dev stack's
(TLS, SCRAM users, ACLs; see ``tests/support/secure_kafka.py``). With ``AOETL_TEST_BROKERS=3`` the
session's Kafka is a three-broker KRaft cluster (``aoetl.devstack.cluster``; plaintext only), its topics
with 3 replicas; unset, the one broker as always.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aoetl.devstack import StackEndpoints, running_stack
from shared.policy.settings import DATA_ROOTS_ENV, dev_data_roots
from tests.helpers import make_state_dir
from tests.support.secure_kafka import secure_requested, secured_stack

# The suite is a development environment: its files live under the development data roots (the repository's
# data folders and the temp dir) plus its own fixtures, for the connectors called in-process and for every
# service it starts.
_REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault(
    DATA_ROOTS_ENV, json.dumps([*(str(root) for root in dev_data_roots(_REPO)), str(_REPO / "tests")])
)


@pytest.fixture(scope="session")
def stack_endpoints() -> Iterator[StackEndpoints]:
    state_dir = make_state_dir("aoetl-test-stack-")
    if secure_requested():
        with secured_stack(state_dir) as endpoints:
            yield endpoints
        return
    brokers = int(os.environ.get("AOETL_TEST_BROKERS") or 1)
    try:
        with running_stack(state_dir, brokers=brokers if brokers > 1 else None) as endpoints:
            yield endpoints
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_endpoints: StackEndpoints) -> str:
    return stack_endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
def postgres_dsn(stack_endpoints: StackEndpoints) -> str:
    return stack_endpoints.postgres_dsn


@pytest.fixture(scope="session", autouse=True)
def _private_cli_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads or writes the developer's own CLI configuration (their token): the CLI, in process or
    as a subprocess, finds an empty one of the session's instead."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AOETL_CONFIG", str(tmp_path_factory.mktemp("cli-config") / "config.toml"))
    patch.delenv("AOETL_TOKEN", raising=False)
    yield
    patch.undo()
