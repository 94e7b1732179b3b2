"""PostgreSQL connector against a real server: tables, queries, incremental cursors, key ranges, types."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

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
from shared.spec.models import PostgresSource

pytestmark = pytest.mark.integration

ROWS = 1000


@pytest.fixture
def dsn_env(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"AOETL_TEST_SOURCE_DSN_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(name, postgres_dsn)
    return name


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


def test_table_types_are_preserved(table: str, dsn_env: str) -> None:
    got = read_all(PostgresSource(table=table, dsn_env=dsn_env), 1)
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
def test_key_ranges_reassemble_exactly(table: str, dsn_env: str, parallelism: int | None) -> None:
    source = PostgresSource(table=table, dsn_env=dsn_env, split_column="id")
    splits = plan_splits(source, parallelism, batch_rows=128)
    assert {s.kind for s in splits} == {SplitKind.KEY_RANGE}
    if parallelism is not None:
        assert len(splits) == parallelism
    ids = read_all(source, parallelism).column("id").to_pylist()
    assert sorted(ids, key=lambda v: (v is not None, v)) == [None, None, *range(1, ROWS + 1)]


def test_query_source_with_incremental_cursor(table: str, dsn_env: str) -> None:
    source = PostgresSource(
        query=f"SELECT id, name, at FROM {table} WHERE id % 2 = 0;",
        dsn_env=dsn_env,
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


def test_auto_parallelism_uses_estimated_rows(table: str, dsn_env: str, postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ANALYZE {table}")
    source = PostgresSource(table=table, dsn_env=dsn_env, split_column="id")
    assert len(plan_splits(source, None, batch_rows=250)) == 4  # ~1002 rows / 250
    assert len(plan_splits(source, None, batch_rows=10)) == 8  # capped
    assert plan_splits(source, None, batch_rows=5000)[0].kind is SplitKind.WHOLE


def test_errors_are_classified(table: str, dsn_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceNotFoundError):
        plan_splits(PostgresSource(table="public.no_such_table_xyz", dsn_env=dsn_env), None)
    with pytest.raises(SourceReadError):
        plan_splits(PostgresSource(query="SELECT no_such_column FROM pg_class", dsn_env=dsn_env), None)
    with pytest.raises(SourceReadError, match="not an integer"):
        plan_splits(PostgresSource(table=table, dsn_env=dsn_env, split_column="name"), 2)
    with pytest.raises(ConfigurationError):
        plan_splits(PostgresSource(table=table, dsn_env="AOETL_TEST_UNSET_DSN_VARIABLE"), None)
    monkeypatch.setenv("AOETL_TEST_REFUSED_DSN", "postgresql://postgres@127.0.0.1:1/postgres")
    source = PostgresSource(table=table, dsn_env="AOETL_TEST_REFUSED_DSN")
    with pytest.raises(SourceUnavailableError):
        plan_splits(source, None)
    with pytest.raises(SourceUnavailableError):
        list(read_split(source, plan_splits(PostgresSource(table=table, dsn_env=dsn_env), 1)[0], 10))
