"""DuckDB file sink: every mode, exactly-once under redelivery, schema evolution, dedupe, the atomic
replace swap, and the single-writer lock reported as a transient error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from services.load.exceptions import DestinationUnavailableError, IncompatibleSchemaError
from services.load.sinks import WriteResult, open_sink
from services.load.sinks.duckdb_file import DuckDBSink
from shared.errors import TerminalError
from shared.spec.models import DuckDBDestination, WriteMode
from tests.support.sink_tables import as_metrics, checksum_query, expected_checksums, sample_table

pytestmark = pytest.mark.unit

MakeSink = Callable[..., DuckDBSink]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "out" / "warehouse.duckdb"


@pytest.fixture
def make_sink(db_path: Path) -> MakeSink:
    def make(mode: WriteMode = WriteMode.APPEND, keys: list[str] | None = None) -> DuckDBSink:
        return DuckDBSink(DuckDBDestination(path=str(db_path), table="items", mode=mode, keys=keys or []))

    return make


def query(db_path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with duckdb.connect(str(db_path)) as con:
        return con.execute(sql, list(params)).fetchall()


def checksums(db_path: Path, table: str = "items") -> dict[str, object]:
    sql, names = checksum_query(f'"{table}"', "duckdb")
    return as_metrics(query(db_path, sql)[0], names)


def ledger(db_path: Path, run_id: str) -> dict[str, int]:
    rows = query(db_path, "SELECT batch_id, rows FROM aoetl.aoetl_ledger WHERE run_id = ?", run_id)
    return {str(b): int(r) for b, r in rows}  # type: ignore[call-overload]


def test_append_applies_each_batch_once_and_keeps_every_value(make_sink, db_path):
    sink = make_sink()
    first, second = sample_table(3000, seed=1), sample_table(2000, seed=2, start_id=3000)
    assert sink.write("run-a", "t:0", first) == WriteResult(True, 3000, 0)
    assert sink.write("run-a", "t:1", second) == WriteResult(True, 2000, 0)
    assert sink.write("run-a", "t:0", first) == WriteResult(False, 3000, 0)  # reports the first write
    assert make_sink().write("run-a", "t:1", second).applied is False
    sink.finalize("run-a")
    sink.finalize("run-a")
    assert checksums(db_path) == pytest.approx(expected_checksums([first, second]))
    assert ledger(db_path, "run-a") == {"t:0": 3000, "t:1": 2000}


def test_merge_upserts_on_keys_last_row_of_a_batch_wins(make_sink, db_path):
    sink = make_sink(WriteMode.MERGE, ["id"])
    assert sink.write("run-m", "t:0", pa.table({"id": [1, 2, 3], "v": ["a1", "b1", "c1"]})).rows_written == 3
    two = pa.table({"id": [3, 4, 4, 5], "v": ["c2", "d2", "d3", "e2"]})
    assert sink.write("run-m", "t:1", two) == WriteResult(True, 3, 0)
    assert sink.write("run-m", "t:1", two).applied is False
    assert query(db_path, "SELECT id, v FROM items ORDER BY id") == [
        (1, "a1"),
        (2, "b1"),
        (3, "c2"),
        (4, "d3"),
        (5, "e2"),
    ]


def test_replace_readers_see_the_old_table_until_the_swap(make_sink, db_path):
    old = sample_table(300, seed=3)
    make_sink().write("run-old", "t:0", old)
    sink = make_sink(WriteMode.REPLACE)
    new = [sample_table(400, seed=4), sample_table(100, seed=5, start_id=400)]
    with duckdb.connect(str(db_path)) as reader:  # shares the database instance with the sink
        for seq, batch in enumerate(new):
            sink.write("run-new", f"tn:{seq}", batch)
            assert reader.execute("SELECT count(*) FROM items").fetchone() == (300,)
        reader.execute("BEGIN TRANSACTION")
        assert reader.execute("SELECT count(*) FROM items").fetchone() == (300,)
        sink.finalize("run-new")
        # A transaction that started before the swap keeps its snapshot: the whole old table.
        assert reader.execute("SELECT count(*) FROM items").fetchone() == (300,)
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM items").fetchone() == (500,)
    assert checksums(db_path) == pytest.approx(expected_checksums(new))
    assert query(db_path, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'items__aoetl_%'") == [
        (0,)
    ]
    sink.finalize("run-new")
    assert sink.write("run-new", "tn:0", new[0]).applied is False


def test_replace_abort_drops_staging_and_forgets_its_batches(make_sink, db_path):
    old = sample_table(50, seed=6)
    make_sink().write("run-old", "t:0", old)
    sink = make_sink(WriteMode.REPLACE)
    sink.write("run-bad", "tb:0", sample_table(20, seed=7))
    sink.abort("run-bad")
    sink.abort("run-bad")
    assert query(db_path, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'items__aoetl_%'") == [
        (0,)
    ]
    assert ledger(db_path, "run-bad") == {"__end_of_run__:run-bad": 0}
    assert checksums(db_path) == pytest.approx(expected_checksums([old]))


def test_schema_evolution_adds_new_columns_and_nulls_missing_ones(make_sink, db_path):
    sink = make_sink()
    sink.write("run-e", "t:0", pa.table({"id": [1], "a": ["x"]}))
    sink.write("run-e", "t:1", pa.table({"id": [2], "a": ["y"], "b": pa.array([2.5])}))
    sink.write("run-e", "t:2", pa.table({"b": pa.array([3.5]), "id": pa.array([3], pa.int32())}))
    assert query(db_path, "SELECT id, a, b FROM items ORDER BY id") == [
        (1, "x", None),
        (2, "y", 2.5),
        (3, None, 3.5),
    ]


def test_incompatible_type_is_terminal_names_the_column_and_writes_nothing(make_sink, db_path):
    sink = make_sink()
    sink.write("run-i", "t:0", pa.table({"id": [1], "n": pa.array([10], pa.int64())}))
    with pytest.raises(IncompatibleSchemaError) as caught:
        sink.write("run-i", "t:1", pa.table({"id": [2], "n": ["10"]}))
    assert isinstance(caught.value, TerminalError)
    assert "'n'" in str(caught.value) and "BIGINT" in str(caught.value) and "VARCHAR" in str(caught.value)
    assert ledger(db_path, "run-i") == {"t:0": 1}
    assert query(db_path, "SELECT count(*) FROM items") == [(1,)]


def test_dedupe_keys_hold_across_batches_of_a_run(make_sink, db_path):
    sink = make_sink()
    one = pa.table({"k": [1, 2, 3, 3], "tag": ["a", "b", "c", "c-dup"]})
    two = pa.table({"k": [3, 4, 5], "tag": ["c-again", "d", "e"]})
    assert sink.write("run-d", "t:0", one, dedupe_keys=["k"]) == WriteResult(True, 3, 1)
    assert make_sink().write("run-d", "t:1", two, dedupe_keys=["k"]) == WriteResult(True, 2, 1)
    assert sink.write("run-d", "t:1", two, dedupe_keys=["k"]) == WriteResult(False, 2, 0)
    assert query(db_path, "SELECT k, tag FROM items ORDER BY k") == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "d"),
        (5, "e"),
    ]
    assert ledger(db_path, "run-d") == {"t:0": 3, "t:1": 2}

    dedupe = "SELECT count(*) FROM aoetl.dedupe WHERE run_id = ?"
    assert query(db_path, dedupe, "run-d") == [(5,)]
    sink.finalize("run-d")  # written with dedupe keys: its key hashes go with the run
    assert query(db_path, dedupe, "run-d") == [(0,)]


@pytest.mark.parametrize("mode", [WriteMode.APPEND, WriteMode.MERGE, WriteMode.REPLACE])
def test_only_a_run_with_something_to_end_ends_in_a_transaction(make_sink, db_path, mode, monkeypatch):
    """Append or merge without dedupe has nothing to end (no staging, no key hashes): no transaction,
    two PostgreSQL round trips per run saved; replace always swaps its staging table in. The sink knows
    it of the runs it wrote without dedupe keys; a run it never wrote a batch of ends in a transaction."""
    sink = make_sink(mode, keys=["k"] if mode is WriteMode.MERGE else None)
    sink.write("run-e", "t:0", pa.table({"k": [1, 2]}))
    sink.write("run-f", "f:0", pa.table({"k": [3]}))
    opened: list[str] = []
    real = sink._transaction

    def counted(action: str):
        opened.append(action)
        return real(action)

    monkeypatch.setattr(sink, "_transaction", counted)
    sink.finalize("run-e")
    sink.abort("run-f")
    expected = ["finalizing", "aborting"] if mode is WriteMode.REPLACE else []
    assert opened == expected
    if mode is not WriteMode.REPLACE:
        assert query(db_path, "SELECT k FROM items ORDER BY k") == [(1,), (2,), (3,)]
    sink.finalize("run-unknown")  # another replica's, or written before a restart
    assert opened == [*expected, "finalizing"]


def test_a_run_written_with_dedupe_keys_ends_in_a_transaction(make_sink, db_path, monkeypatch):
    sink = make_sink()
    sink.write("run-k", "t:0", pa.table({"k": [1, 2]}), dedupe_keys=["k"])
    opened: list[str] = []
    real = sink._transaction
    monkeypatch.setattr(sink, "_transaction", lambda action: opened.append(action) or real(action))
    sink.finalize("run-k")
    assert opened == ["finalizing"]
    assert query(db_path, "SELECT count(*) FROM aoetl.dedupe WHERE run_id = ?", "run-k") == [(0,)]


def test_the_memory_of_runs_without_dedupe_is_bounded(make_sink, monkeypatch):
    """A run that never ends must not grow the sink: the oldest is forgotten, and its end then costs the
    transaction every run had before (safe: an empty delete)."""
    monkeypatch.setattr("services.load.sinks.ledger.MAX_RUNS_REMEMBERED", 2)
    sink = make_sink()
    for run in ("a", "b", "c"):
        sink.write(run, f"{run}:0", pa.table({"k": [1]}))
    opened: list[str] = []
    real = sink._transaction
    monkeypatch.setattr(sink, "_transaction", lambda action: opened.append(action) or real(action))
    sink.finalize("a")
    sink.finalize("b")
    sink.finalize("c")
    assert opened == ["finalizing"]


def test_a_file_locked_by_another_process_is_transient(make_sink, db_path):
    make_sink().write("run-l", "t:0", pa.table({"id": [1]}))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys\ncon = duckdb.connect({str(db_path)!r})\n"
            "print('ready', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(DestinationUnavailableError):
            make_sink().write("run-l", "t:1", pa.table({"id": [2]}))
    finally:
        holder.communicate("")
    assert make_sink().write("run-l", "t:1", pa.table({"id": [2]})).applied  # the retry goes through
    assert query(db_path, "SELECT id FROM items ORDER BY id") == [(1,), (2,)]


def test_open_sink_builds_a_duckdb_sink(db_path):
    sink = open_sink(DuckDBDestination(path=str(db_path), table="items"))
    assert isinstance(sink, DuckDBSink)
    assert sink.write("run-f", "t:0", pa.table({"id": [1]})) == WriteResult(True, 1, 0)
