"""The PostgreSQL sinks share their connections per DSN (``services.load.sinks.pg_connections``): a run into
a table no sink wrote yet takes the backend the last run gave back instead of connecting (and bootstrapping
the ledger) again; a connection that failed, or that no longer answers, is never handed out. Against a
fake ADBC connection: what matters is which connection each write uses and which ones are closed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import pytest

import services.load.sinks.postgres as postgres_module
from services.load.exceptions import DestinationUnavailableError
from services.load.sinks import pg_connections
from services.load.sinks.postgres import PostgresSink
from shared.spec.models import PostgresDestination

pytestmark = pytest.mark.unit

DSN = "postgresql://u@db/warehouse"


def _lost() -> adbc_driver_manager.Error:
    return adbc_driver_manager.OperationalError(
        "server closed the connection unexpectedly", status_code=adbc_driver_manager.AdbcStatusCode.IO
    )


class FakeConnection:
    """Answers what the sink asks: no table yet (so it creates one), every ledger claim granted."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.statements: list[str] = []
        self.ingested: list[str] = []
        self.closed = False
        self.dead = False  # the server went away: every statement fails
        self.fail_next_ingest = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self._alive()

    def rollback(self) -> None:
        self._alive()

    def close(self) -> None:
        self.closed = True

    def _alive(self) -> None:
        if self.dead:
            raise _lost()


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self._conn = conn
        self._last = ""

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, statement: str, parameters: Any = None) -> None:
        self._conn._alive()
        self._conn.statements.append(statement)
        self._last = statement

    def fetchone(self) -> Any:
        return (1,) if "RETURNING 1" in self._last else None

    def fetchall(self) -> list[Any]:
        return [(1,)] if self._last == "SELECT 1" else []

    def adbc_ingest(self, table: str, data: Any, **kw: Any) -> int:
        self._conn._alive()
        if self._conn.fail_next_ingest:
            self._conn.fail_next_ingest = False
            self._conn.dead = True
            raise _lost()
        self._conn.ingested.append(table)
        return int(data.num_rows)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeConnection]]:
    made: list[FakeConnection] = []

    def connect(dsn: str) -> FakeConnection:
        made.append(FakeConnection(len(made)))
        return made[-1]

    pg_connections.close_idle()
    monkeypatch.setattr(postgres_module.adbc, "connect", connect)
    yield made
    pg_connections.close_idle()


def sink(table: str, dsn: str = DSN) -> PostgresSink:
    return PostgresSink(PostgresDestination(table=table), dsn=dsn)


ROWS = pa.table({"id": [1, 2, 3]})


def test_the_next_run_into_another_table_takes_the_connection_the_last_run_gave_back(
    connections: list[FakeConnection],
) -> None:
    first = sink("orders")
    first.write("run-1", "run-1:t0:0", ROWS)
    first.finalize("run-1")

    second = sink("orders_copy")
    second.write("run-2", "run-2:t0:0", ROWS)

    assert len(connections) == 1, "the second run connected again"
    conn = connections[0]
    assert conn.ingested == ["orders", "orders_copy"]
    bootstraps = [s for s in conn.statements if s.startswith("CREATE SCHEMA IF NOT EXISTS")]
    assert len(bootstraps) == 1, "the ledger was bootstrapped once per connection"
    assert not conn.closed


def test_while_a_sink_holds_its_connection_another_sink_connects_on_its_own(
    connections: list[FakeConnection],
) -> None:
    first, second = sink("a"), sink("b")
    first.write("run-1", "run-1:t0:0", ROWS)
    second.write("run-2", "run-2:t0:0", ROWS)  # run-1 has not ended: its connection is still in use

    assert [c.ingested for c in connections] == [["a"], ["b"]]


def test_a_connection_that_failed_is_closed_and_never_handed_out_again(
    connections: list[FakeConnection],
) -> None:
    first = sink("orders")
    first.write("run-1", "run-1:t0:0", ROWS)
    connections[0].fail_next_ingest = True
    with pytest.raises(DestinationUnavailableError):
        first.write("run-1", "run-1:t0:1", ROWS)
    assert connections[0].closed

    first.write("run-1", "run-1:t0:1", ROWS)  # the retry reconnects
    first.close()
    sink("other").write("run-2", "run-2:t0:0", ROWS)

    assert len(connections) == 2
    assert connections[1].ingested == ["orders", "other"]


def test_an_idle_connection_that_no_longer_answers_is_closed_and_a_new_one_made(
    connections: list[FakeConnection],
) -> None:
    first = sink("orders")
    first.write("run-1", "run-1:t0:0", ROWS)
    first.close()
    connections[0].dead = True  # PostgreSQL restarted while the connection was idle

    sink("orders").write("run-2", "run-2:t0:0", ROWS)  # no failed batch: the check caught it

    assert connections[0].closed
    assert len(connections) == 2 and connections[1].ingested == ["orders"]


def test_each_dsn_has_its_own_connections(connections: list[FakeConnection]) -> None:
    first = sink("orders")
    first.write("run-1", "run-1:t0:0", ROWS)
    first.close()

    sink("orders", dsn="postgresql://u@other/warehouse").write("run-2", "run-2:t0:0", ROWS)

    assert len(connections) == 2
    assert connections[0].ingested == ["orders"] and not connections[0].closed


def test_at_most_a_few_idle_connections_are_kept_per_dsn(connections: list[FakeConnection]) -> None:
    sinks = [sink(f"t{i}") for i in range(pg_connections.MAX_IDLE_PER_DSN + 2)]
    for index, each in enumerate(sinks):
        each.write(f"run-{index}", f"run-{index}:t0:0", ROWS)
    for each in sinks:
        each.close()

    kept = [c for c in connections if not c.closed]
    assert len(kept) == pg_connections.MAX_IDLE_PER_DSN
    pg_connections.close_idle()
    assert all(c.closed for c in connections)
