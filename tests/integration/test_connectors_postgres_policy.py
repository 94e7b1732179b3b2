"""The PostgreSQL source against a real server, as an attacker would use it: a query that closes the
wrapper's parenthesis, writes hidden where a parser lets them through, and queries that never end. Run as
the dev stack's superuser, the worst case the issue found."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from shared.connectors import SourceReadError, plan_splits, read_split
from shared.policy import PolicyViolation
from shared.spec.models import PostgresSource

pytestmark = pytest.mark.integration


def declare_connection(monkeypatch: pytest.MonkeyPatch, dsn: str) -> str:
    """A declared connection (``shared.policy.connections``) whose secret is ``dsn``; its name."""
    variable = f"AOETL_TEST_SOURCE_DSN_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(variable, dsn)
    monkeypatch.setenv("AOETL_POLICY_CONNECTIONS", json.dumps({"source-db": {"env": variable}}))
    return "source-db"


@pytest.fixture
def connection(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return declare_connection(monkeypatch, postgres_dsn)


@pytest.fixture
def victim(postgres_dsn: str) -> Iterator[str]:
    name = f"victim_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.{name} (id int)")
        conn.execute(f"INSERT INTO public.{name} VALUES (1), (2)")
        conn.execute(f"CREATE SEQUENCE public.{name}_seq")
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")
        conn.execute(f"DROP SEQUENCE IF EXISTS public.{name}_seq")


def rows_of(postgres_dsn: str, table: str) -> int | None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone() == (None,):
            return None
        row = conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()
        return int(row[0]) if row else None


def read_all(source: PostgresSource) -> list[dict[str, object]]:
    return [r for s in plan_splits(source, 1) for t in read_split(source, s, 100) for r in t.to_pylist()]


@pytest.mark.parametrize(
    "escape",
    [
        "SELECT 1 AS a) AS src; DROP TABLE public.{victim}; --",
        "SELECT 1 AS a) AS src; COMMIT; DROP TABLE public.{victim}; SELECT * FROM (SELECT 1",
        "SELECT 1 AS a; DROP TABLE public.{victim}",
        "WITH d AS (DELETE FROM public.{victim} RETURNING *) SELECT * FROM d",
    ],
)
def test_a_query_escaping_its_select_runs_nothing(
    escape: str, victim: str, connection: str, postgres_dsn: str
) -> None:
    source = PostgresSource(query=escape.format(victim=victim), connection=connection)
    with pytest.raises(PolicyViolation, match="source query"):
        plan_splits(source, None)
    harmless = PostgresSource(query="SELECT 1", connection=connection)
    with pytest.raises(PolicyViolation):
        list(read_split(source, plan_splits(harmless, 1)[0], 10))
    assert rows_of(postgres_dsn, victim) == 2  # the table is still there, with its rows


def test_every_statement_runs_in_a_read_only_transaction(
    victim: str, connection: str, postgres_dsn: str
) -> None:
    """nextval() is a function call the parser cannot tell from a read: the transaction refuses it."""
    settings = read_all(
        PostgresSource(
            query="SELECT current_setting('transaction_read_only') AS ro,"
            " current_setting('statement_timeout') AS timeout",
            connection=connection,
        )
    )
    assert settings == [{"ro": "on", "timeout": "5min"}]  # the policy's default, 300 s
    with pytest.raises(SourceReadError, match="read-only transaction"):
        read_all(PostgresSource(query=f"SELECT nextval('public.{victim}_seq') AS n", connection=connection))
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT last_value, is_called FROM public.{victim}_seq").fetchone() == (1, False)


def test_a_statement_longer_than_the_policy_allows_is_cancelled_terminally(
    connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOETL_POLICY_POSTGRES_STATEMENT_TIMEOUT_S", "0.5")
    slow = "SELECT count(*) AS n FROM generate_series(1, 2000000000) g"
    with pytest.raises(SourceReadError, match="ran longer than the policy allows") as info:
        read_all(PostgresSource(query=slow, connection=connection))
    assert not info.value.transient  # the same query would be cancelled again


def test_the_dsns_own_options_are_kept(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = declare_connection(
        monkeypatch, psycopg.conninfo.make_conninfo(postgres_dsn, options="-c search_path=pg_catalog")
    )
    got = read_all(
        PostgresSource(
            query="SELECT current_setting('search_path') AS path,"
            " current_setting('transaction_read_only') AS ro",
            connection=name,
        )
    )
    assert got == [{"path": "pg_catalog", "ro": "on"}]


def test_the_credential_catalogs_and_the_ledger_are_not_read(connection: str) -> None:
    for source in (
        PostgresSource(table="pg_catalog.pg_authid", connection=connection),
        PostgresSource(query="SELECT rolname, rolpassword FROM pg_authid", connection=connection),
        PostgresSource(query="SELECT pg_read_file('/etc/passwd') AS f", connection=connection),
        PostgresSource(table="aoetl.aoetl_ledger", connection=connection),
    ):
        with pytest.raises(PolicyViolation):
            plan_splits(source, None)
