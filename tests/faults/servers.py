"""Servers of a fault test's own and the faults that hit them: a private broker or PostgreSQL (never the
session's or a shared one, since the faults stop them), their restarts on the same ports and data folders
(clients must find them again where they were), and PostgreSQL backends terminated mid-transaction (told
apart by their ``application_name``). A failed test keeps the servers' logs with ``AOETL_FAULTS_KEEP_LOGS``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg

from aoetl.devstack.kafka import KafkaNode
from aoetl.devstack.postgres import PostgresNode
from tests.faults.harness import keep_logs
from tests.helpers import make_state_dir


# ---------------------------------------------------------------------------------- PostgreSQL faults
def with_application_name(dsn: str, name: str) -> str:
    """The DSN with an ``application_name``, so the backends of one system can be told apart."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def terminate_backends(dsn: str, application_name: str, *, in_transaction_only: bool = True) -> int:
    """``pg_terminate_backend`` every backend of ``application_name`` (only those inside a transaction,
    by default: a write is cut mid-way); returns how many were terminated."""
    condition = "AND xact_start IS NOT NULL" if in_transaction_only else ""
    with psycopg.connect(dsn, autocommit=True) as con:
        rows = con.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = %s AND pid <> pg_backend_pid() {condition}",
            (application_name,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


# ------------------------------------------------------------------------------- private servers
N = TypeVar("N", KafkaNode, PostgresNode)


@contextlib.contextmanager
def _private(node_class: Callable[[Path], N], name: str) -> Iterator[N]:
    state = make_state_dir(f"aoetl-faults-{name}-")
    node = node_class(state / name)
    try:
        node.start()
        yield node
    except BaseException:
        keep_logs(node.home, name)
        raise
    finally:
        node.stop()
        shutil.rmtree(state, ignore_errors=True)


def private_kafka() -> contextlib.AbstractContextManager[KafkaNode]:
    """A broker of our own, for the faults that stop it (never the session's or the shared one)."""
    return _private(KafkaNode, "kafka")


def private_postgres() -> contextlib.AbstractContextManager[PostgresNode]:
    """A PostgreSQL cluster of our own, for the faults that restart it."""
    return _private(PostgresNode, "postgres")


def restart_kafka(node: KafkaNode) -> None:
    """Stop the broker and start it again on the same ports and data folder."""
    port, controller_port = node.port, node.controller_port
    node.stop()
    node.start()
    assert (node.port, node.controller_port) == (port, controller_port), "the broker moved to another port"


def restart_postgres(node: PostgresNode) -> None:
    """Stop PostgreSQL (fast shutdown: open transactions are rolled back) and start it again, same port."""
    port = node.port
    node.stop()
    node.start()
    assert node.port == port, "PostgreSQL moved to another port"
