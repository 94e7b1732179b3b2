"""PostgreSQL connector against a real server: tables, queries, incremental cursors, key ranges, types."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pyarrow as pa
import pytest

from shared.connectors import (
    SourceNotFoundError,
    SourceReadError,
    SourceUnavailableError,
    plan_splits,
    read_split,
)
from shared.contracts import SplitKind
from shared.errors import ConfigurationError
from shared.policy.connections import ConnectionPolicyError
from shared.spec.models import PostgresSource

pytestmark = pytest.mark.integration

ROWS = 1000


Declare = Callable[[str, "str | None"], str]


@pytest.fixture
def declare(monkeypatch: pytest.MonkeyPatch) -> Declare:
    """Declare a connection (AOETL_POLICY_CONNECTIONS) whose secret is ``dsn`` (None: variable unset)."""
    declared: dict[str, dict[str, str]] = {}

    def add(name: str, dsn: str | None) -> str:
        variable = f"AOETL_TEST_DSN_{uuid.uuid4().hex[:8].upper()}"
        if dsn is not None:
            monkeypatch.setenv(variable, dsn)
        declared[name] = {"env": variable}
        monkeypatch.setenv("AOETL_POLICY_CONNECTIONS", json.dumps(declared))
        return name

    return add


@pytest.fixture
def connection(postgres_dsn: str, declare: Declare) -> str:
    return declare("source-db", postgres_dsn)


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    """A table of ROWS rows plus two with a NULL id (key ranges must not lose them)."""
    name = f"conn_src_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"""CREATE TABLE public.{name} (
                  id bigint, small int2, name text, score float8, ok bool, day date,
                  at timestamptz, local_at timestamp, amount numeric(12, 3), doc jsonb, uid uuid)"""
        )
        conn.execute(
            f"""INSERT INTO public.{name}
                SELECT g, (g % 100)::int2, CASE WHEN g % 10 = 0 THEN NULL ELSE 'name ' || g END, g / 4.0,
                       g % 2 = 0, date '2024-01-01' + g,
                       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
                       timestamp '2024-01-01 00:00:00' + g * interval '1 minute', g * 1.001,
                       jsonb_build_object('g', g), md5(g::text)::uuid
                FROM generate_series(1, {ROWS}) g"""
        )
        conn.execute(f"INSERT INTO public.{name} (id, name) VALUES (NULL, 'null-a'), (NULL, 'null-b')")
    yield f"public.{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")


def read_all(source: PostgresSource, parallelism: int | None, batch_rows: int = 128) -> pa.Table:
    tables = [
        t
        for s in plan_splits(source, parallelism, batch_rows=batch_rows)
        for t in read_split(source, s, batch_rows)
    ]
    assert all(0 < t.num_rows <= batch_rows for t in tables)
    assert len({t.schema for t in tables}) == 1
    return pa.concat_tables(tables)


def test_table_types_are_preserved(table: str, connection: str) -> None:
    got = read_all(PostgresSource(table=table, connection=connection), 1)
    assert got.num_rows == ROWS + 2
    types = {f.name: f.type for f in got.schema}
    assert types == {
        "id": pa.int64(),
        "small": pa.int16(),
        "name": pa.string(),
        "score": pa.float64(),
        "ok": pa.bool_(),
        "day": pa.date32(),
        "at": pa.timestamp("us", tz="UTC"),
        "local_at": pa.timestamp("us"),
        "amount": pa.string(),
        "doc": pa.string(),
        "uid": pa.string(),
    }
    row = next(r for r in got.to_pylist() if r["id"] == 7)
    assert row["amount"] == "7.007"
    assert row["day"] == dt.date(2024, 1, 8)
    assert row["at"] == dt.datetime(2024, 1, 1, 0, 7, tzinfo=dt.UTC)
    assert row["ok"] is False and row["score"] == 1.75 and row["name"] == "name 7"


@pytest.mark.parametrize("parallelism", [2, 3, 7, 50, None])
def test_key_ranges_reassemble_exactly(table: str, connection: str, parallelism: int | None) -> None:
    source = PostgresSource(table=table, connection=connection, split_column="id")
    splits = plan_splits(source, parallelism, batch_rows=128)
    assert {s.kind for s in splits} == {SplitKind.KEY_RANGE}
    if parallelism is not None:
        assert len(splits) == parallelism
    ids = read_all(source, parallelism).column("id").to_pylist()
    assert sorted(ids, key=lambda v: (v is not None, v)) == [None, None, *range(1, ROWS + 1)]


def test_query_source_with_incremental_cursor(table: str, connection: str) -> None:
    source = PostgresSource(
        query=f"SELECT id, name, at FROM {table} WHERE id % 2 = 0;",
        connection=connection,
        cursor_column="at",
        cursor_start="2024-01-01 15:00:00+00",  # after id 900
        split_column="id",
    )
    got = read_all(source, 3, batch_rows=1000)
    assert got.column_names == ["id", "name", "at"]
    assert sorted(got.column("id").to_pylist()) == list(range(902, ROWS + 1, 2))
    # Within one split rows come in cursor order, so the extract stage can checkpoint the cursor.
    single = read_all(PostgresSource(**{**source.model_dump(), "split_column": None}), None)
    assert single.column("at").to_pylist() == sorted(single.column("at").to_pylist())


def test_auto_parallelism_uses_estimated_rows(table: str, connection: str, postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ANALYZE {table}")
    source = PostgresSource(table=table, connection=connection, split_column="id")
    assert len(plan_splits(source, None, batch_rows=250)) == 4  # ~1002 rows / 250
    assert len(plan_splits(source, None, batch_rows=10)) == 8  # capped
    assert plan_splits(source, None, batch_rows=5000)[0].kind is SplitKind.WHOLE


def test_errors_are_classified(table: str, connection: str, declare: Declare) -> None:
    with pytest.raises(SourceNotFoundError):
        plan_splits(PostgresSource(table="public.no_such_table_xyz", connection=connection), None)
    with pytest.raises(SourceReadError):
        plan_splits(PostgresSource(query="SELECT no_such_column FROM pg_class", connection=connection), None)
    with pytest.raises(SourceReadError, match="not an integer"):
        plan_splits(PostgresSource(table=table, connection=connection, split_column="name"), 2)
    with pytest.raises(ConfigurationError, match="is not set"):
        plan_splits(PostgresSource(table=table, connection=declare("unset", None)), None)
    with pytest.raises(ConnectionPolicyError, match="no postgres connection named 'undeclared'"):
        plan_splits(PostgresSource(table=table, connection="undeclared"), None)
    source = PostgresSource(
        table=table, connection=declare("refused", "postgresql://postgres@127.0.0.1:1/postgres")
    )
    with pytest.raises(SourceUnavailableError):
        plan_splits(source, None)
    with pytest.raises(SourceUnavailableError):
        list(read_split(source, plan_splits(PostgresSource(table=table, connection=connection), 1)[0], 10))


def test_no_error_quotes_the_dsn_password(table: str, postgres_dsn: str, declare: Declare) -> None:
    """A DSN that does not parse (libpq would quote its bad part) and one that parses but fails to
    connect: neither error carries the password."""
    planted = "Planted-Src-Pw"
    with pytest.raises(ConfigurationError, match="malformed") as malformed:
        plan_splits(
            PostgresSource(table=table, connection=declare("bad", f"postgresql://u:{planted}%zz@h/db")), None
        )
    refused = f"postgresql://postgres:{planted}@127.0.0.1:1/postgres?connect_timeout=2"
    with pytest.raises(SourceUnavailableError) as unavailable:
        plan_splits(PostgresSource(table=table, connection=declare("down", refused)), None)
    for caught in (malformed, unavailable):
        assert planted not in str(caught.value)
    # the default connection is the one the spec gets without naming any
    declare("default", postgres_dsn)
    assert read_all(PostgresSource(table=table), 1).num_rows == ROWS + 2
