"""PostgreSQL sink against the real server: every mode, exactly-once under redelivery and backend kills,
schema evolution, cross-batch dedupe, the atomic replace swap and the documented type mapping."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from services.load.exceptions import DestinationUnavailableError, IncompatibleSchemaError
from services.load.sinks import WriteResult, open_sink
from services.load.sinks.postgres import PostgresSink
from shared.errors import ConfigurationError, TerminalError
from shared.policy.connections import ConnectionPolicyError
from shared.spec.models import PostgresDestination, WriteMode
from tests.helpers import wait_until
from tests.support.sink_tables import as_metrics, checksum_query, expected_checksums, sample_table

pytestmark = pytest.mark.integration


@pytest.fixture
def table_name(postgres_dsn: str) -> Iterator[str]:
    name = f"sink_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for row in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (f"{name}%",)):
            conn.execute(f'DROP TABLE IF EXISTS public."{row[0]}"')


@pytest.fixture
def make_sink(postgres_dsn: str, table_name: str) -> Iterator[Callable[..., PostgresSink]]:
    sinks: list[PostgresSink] = []

    def make(mode: WriteMode = WriteMode.APPEND, keys: list[str] | None = None) -> PostgresSink:
        sink = PostgresSink(
            PostgresDestination(table=table_name, mode=mode, keys=keys or []), dsn=postgres_dsn
        )
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def query(dsn: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


def checksums(dsn: str, table: str) -> dict[str, object]:
    sql, names = checksum_query(f'public."{table}"', "postgres")
    return as_metrics(query(dsn, sql)[0], names)


def ledger(dsn: str, table: str, run_id: str) -> dict[str, int]:
    rows = query(
        dsn,
        "SELECT batch_id, rows FROM aoetl.aoetl_ledger WHERE destination = %s AND run_id = %s",
        f"postgres:public.{table}",
        run_id,
    )
    return {str(b): int(r) for b, r in rows}  # type: ignore[call-overload]


def test_append_applies_each_batch_once_and_keeps_every_value(make_sink, postgres_dsn, table_name):
    sink = make_sink()
    first, second = sample_table(3000, seed=1), sample_table(2000, seed=2, start_id=3000)
    assert sink.write("run-a", "t1:0", first) == WriteResult(True, 3000, 0)
    assert sink.write("run-a", "t1:1", second) == WriteResult(True, 2000, 0)
    before = checksums(postgres_dsn, table_name)

    assert sink.write("run-a", "t1:0", first) == WriteResult(
        False, 3000, 0
    )  # redelivery reports the first write
    assert make_sink().write("run-a", "t1:1", second).applied is False  # another replica's redelivery
    sink.finalize("run-a")
    sink.finalize("run-a")

    assert checksums(postgres_dsn, table_name) == before
    assert before == pytest.approx(expected_checksums([first, second]))
    assert ledger(postgres_dsn, table_name, "run-a") == {"t1:0": 3000, "t1:1": 2000}


def test_tables_are_created_with_the_documented_type_mapping(make_sink, postgres_dsn, table_name):
    batch = pa.table(
        {
            "i64": pa.array([1], pa.int64()),
            "i32": pa.array([1], pa.int32()),
            "f64": pa.array([1.5], pa.float64()),
            "s": pa.array(["x"], pa.large_string()),
            "b": pa.array([True]),
            "d": pa.array([0], pa.date32()),
            "tz": pa.array([0], pa.timestamp("ns", tz="Europe/Paris")),
            "naive": pa.array([0], pa.timestamp("ms")),
            "dec": pa.array([Decimal("1.25")], pa.decimal128(9, 2)),
            "cat": pa.array(["a"]).dictionary_encode(),
            "nothing": pa.nulls(1),
        }
    )
    make_sink().write("run-t", "t:0", batch)
    types = dict(
        query(
            postgres_dsn,
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c"
            " JOIN pg_attribute a ON a.attrelid = %s::regclass AND a.attname = c.column_name"
            " WHERE table_name = %s",
            table_name,
            table_name,
        )
    )
    assert types == {
        "i64": "bigint",
        "i32": "integer",
        "f64": "double precision",
        "s": "text",
        "b": "boolean",
        "d": "date",
        "tz": "timestamp with time zone",
        "naive": "timestamp without time zone",
        "dec": "numeric(9,2)",
        "cat": "text",
        "nothing": "text",
    }


def test_merge_upserts_on_keys_last_row_of_a_batch_wins(make_sink, postgres_dsn, table_name):
    sink = make_sink(WriteMode.MERGE, ["id"])
    one = pa.table({"id": [1, 2, 3], "v": ["a1", "b1", "c1"]})
    two = pa.table({"id": [3, 4, 4, 5], "v": ["c2", "d2", "d3", "e2"]})
    assert sink.write("run-m", "t:0", one) == WriteResult(True, 3, 0)
    assert sink.write("run-m", "t:1", two) == WriteResult(True, 3, 0)
    assert sink.write("run-m", "t:1", two).applied is False

    rows = query(postgres_dsn, f'SELECT id, v FROM "{table_name}" ORDER BY id')
    assert rows == [(1, "a1"), (2, "b1"), (3, "c2"), (4, "d3"), (5, "e2")]
    unique_indexes = query(
        postgres_dsn,
        "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass AND indisunique",
        table_name,
    )
    assert unique_indexes == [(1,)]


def test_replace_swaps_atomically_and_readers_see_the_old_table_meanwhile(
    make_sink, postgres_dsn, table_name
):
    old = sample_table(500, seed=3)
    make_sink().write("run-old", "t:0", old)
    sink = make_sink(WriteMode.REPLACE)
    new_batches = [sample_table(700, seed=4 + i, start_id=1000 * i) for i in range(3)]
    for seq, batch in enumerate(new_batches):
        sink.write("run-new", f"tn:{seq}", batch)
        assert checksums(postgres_dsn, table_name) == pytest.approx(expected_checksums([old]))

    seen_counts: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            while not stop.is_set():
                seen_counts.add(conn.execute(f'SELECT count(*) FROM "{table_name}"').fetchone()[0])  # type: ignore[index]

    thread = threading.Thread(target=reader)
    thread.start()
    wait_until(lambda: seen_counts, message="reader running")
    sink.finalize("run-new")
    wait_until(lambda: 2100 in seen_counts, message="reader sees the new table")
    stop.set()
    thread.join()

    assert seen_counts <= {500, 2100}  # never a half-loaded or missing table
    assert checksums(postgres_dsn, table_name) == pytest.approx(expected_checksums(new_batches))
    staging = sink.staging_table("run-new").name
    assert query(postgres_dsn, "SELECT to_regclass(%s)", staging) == [(None,)]
    sink.finalize("run-new")  # idempotent
    assert sink.write("run-new", "tn:0", new_batches[0]).applied is False
    assert checksums(postgres_dsn, table_name)["rows"] == 2100


def test_replace_abort_drops_staging_and_forgets_its_batches(make_sink, postgres_dsn, table_name):
    old = sample_table(100, seed=5)
    make_sink().write("run-old", "t:0", old)
    sink = make_sink(WriteMode.REPLACE)
    sink.write("run-bad", "tb:0", sample_table(50, seed=6))
    sink.abort("run-bad")
    sink.abort("run-bad")
    assert query(postgres_dsn, "SELECT to_regclass(%s)", sink.staging_table("run-bad").name) == [(None,)]
    assert ledger(postgres_dsn, table_name, "run-bad") == {"__end_of_run__:run-bad": 0}
    assert checksums(postgres_dsn, table_name) == pytest.approx(expected_checksums([old]))


def test_replace_of_a_run_without_batches_empties_the_table(make_sink, postgres_dsn, table_name):
    make_sink().write("run-old", "t:0", sample_table(10, seed=7))
    make_sink(WriteMode.REPLACE).finalize("run-empty")
    assert query(postgres_dsn, f'SELECT count(*) FROM "{table_name}"') == [(0,)]


def test_schema_evolution_adds_new_columns_and_nulls_missing_ones(make_sink, postgres_dsn, table_name):
    sink = make_sink()
    sink.write("run-e", "t:0", pa.table({"id": [1], "a": ["x"]}))
    sink.write("run-e", "t:1", pa.table({"id": [2], "a": ["y"], "b": pa.array([2.5])}))
    sink.write("run-e", "t:2", pa.table({"b": pa.array([3.5]), "id": [3]}))
    rows = query(postgres_dsn, f'SELECT id, a, b FROM "{table_name}" ORDER BY id')
    assert rows == [(1, "x", None), (2, "y", 2.5), (3, None, 3.5)]


def test_incompatible_type_is_terminal_names_the_column_and_writes_nothing(
    make_sink, postgres_dsn, table_name
):
    sink = make_sink()
    sink.write("run-i", "t:0", pa.table({"id": [1], "n": pa.array([10], pa.int64())}))
    with pytest.raises(IncompatibleSchemaError) as caught:
        sink.write("run-i", "t:1", pa.table({"id": [2], "n": ["ten"]}))
    assert isinstance(caught.value, TerminalError)
    message = str(caught.value)
    assert "'n'" in message and "bigint" in message and "string" in message and table_name in message
    assert ledger(postgres_dsn, table_name, "run-i") == {"t:0": 1}
    # The sink is still usable and the failed batch id is free for a corrected batch.
    assert sink.write("run-i", "t:1", pa.table({"id": [2], "n": pa.array([20], pa.int32())})).applied
    assert query(postgres_dsn, f'SELECT id, n FROM "{table_name}" ORDER BY id') == [(1, 10), (2, 20)]


def test_overflowing_value_is_an_incompatible_schema_not_a_silent_wrap(make_sink, table_name):
    sink = make_sink()
    sink.write("run-o", "t:0", pa.table({"n": pa.array([1], pa.int16())}))
    with pytest.raises(IncompatibleSchemaError, match="smallint"):
        sink.write("run-o", "t:1", pa.table({"n": pa.array([2**40], pa.int64())}))


def test_dedupe_keys_hold_across_batches_and_replicas(make_sink, postgres_dsn, table_name):
    replica_a, replica_b = make_sink(), make_sink()
    one = pa.table({"k": [1, 2, 3, 3], "tag": ["a", "b", "c", "c-dup"]})
    two = pa.table({"k": [3, 4, 5], "tag": ["c-again", "d", "e"]})
    three = pa.table({"k": [1, 6], "tag": ["a-again", "f"]})
    assert replica_a.write("run-d", "t:0", one, dedupe_keys=["k"]) == WriteResult(True, 3, 1)
    assert replica_b.write("run-d", "t:1", two, dedupe_keys=["k"]) == WriteResult(True, 2, 1)
    assert replica_a.write("run-d", "t:2", three, dedupe_keys=["k"]) == WriteResult(True, 1, 1)
    assert replica_b.write("run-d", "t:2", three, dedupe_keys=["k"]) == WriteResult(False, 1, 0)
    rows = query(postgres_dsn, f'SELECT k, tag FROM "{table_name}" ORDER BY k')
    assert rows == [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")]
    assert ledger(postgres_dsn, table_name, "run-d") == {"t:0": 3, "t:1": 2, "t:2": 1}
    # Another run starts with no keys seen.
    assert replica_a.write("run-d2", "t2:0", three, dedupe_keys=["k"]) == WriteResult(True, 2, 0)


def test_backend_killed_mid_copy_leaves_nothing_and_the_retry_applies_once(
    make_sink, postgres_dsn, table_name
):
    sink = make_sink()
    first, second = sample_table(200, seed=8), sample_table(5000, seed=9, start_id=200)
    sink.write("run-k", "t:0", first)
    outcome: list[BaseException | WriteResult] = []

    with psycopg.connect(postgres_dsn) as blocker:
        # Holding this lock parks the sink's COPY inside its transaction (after the ledger insert).
        blocker.execute(f'LOCK TABLE "{table_name}" IN ACCESS EXCLUSIVE MODE')

        def write() -> None:
            try:
                outcome.append(sink.write("run-k", "t:1", second))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        pid = wait_until(
            lambda: query(
                postgres_dsn,
                "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'COPY%%' AND query LIKE %s"
                " AND wait_event_type = 'Lock'",
                f"%{table_name}%",
            ),
            message="the sink's COPY waiting on the table lock",
        )[0][0]
        assert query(postgres_dsn, "SELECT pg_terminate_backend(%s)", pid) == [(True,)]
        thread.join(timeout=60)
        blocker.rollback()

    assert len(outcome) == 1 and isinstance(outcome[0], DestinationUnavailableError), outcome
    assert outcome[0].transient
    assert ledger(postgres_dsn, table_name, "run-k") == {"t:0": 200}
    assert checksums(postgres_dsn, table_name) == pytest.approx(expected_checksums([first]))

    assert sink.write("run-k", "t:1", second) == WriteResult(True, 5000, 0)  # reconnects
    assert sink.write("run-k", "t:1", second).applied is False
    assert checksums(postgres_dsn, table_name) == pytest.approx(expected_checksums([first, second]))


def test_unreachable_server_is_transient(table_name):
    sink = PostgresSink(
        PostgresDestination(table=table_name), dsn="postgresql://postgres@127.0.0.1:1/postgres"
    )
    with pytest.raises(DestinationUnavailableError):
        sink.write("run-u", "t:0", pa.table({"id": [1]}))


def test_open_sink_reads_the_dsn_of_the_named_connection(monkeypatch, postgres_dsn, table_name):
    monkeypatch.setenv("AOETL_POLICY_CONNECTIONS", json.dumps({"sink-db": {"env": "SINK_TEST_DSN"}}))
    with pytest.raises(ConfigurationError, match="SINK_TEST_DSN"):  # declared, but not set
        open_sink(PostgresDestination(table=table_name, connection="sink-db"))
    with pytest.raises(ConnectionPolicyError, match="no postgres connection named 'other'"):
        open_sink(PostgresDestination(table=table_name, connection="other"))
    monkeypatch.setenv("SINK_TEST_DSN", "postgresql://u:Planted-Sink-Pw%zz@h/db")
    with pytest.raises(ConfigurationError, match="malformed") as malformed:
        open_sink(PostgresDestination(table=table_name, connection="sink-db"))
    assert "Planted-Sink-Pw" not in str(malformed.value)
    monkeypatch.setenv("SINK_TEST_DSN", postgres_dsn)
    sink = open_sink(PostgresDestination(table=table_name, connection="sink-db"))
    try:
        assert sink.write("run-f", "t:0", pa.table({"id": [1, 2]})) == WriteResult(True, 2, 0)
    finally:
        sink.close()
