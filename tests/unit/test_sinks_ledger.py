"""The SQL sinks' ledger protocol on its own, against a real (in-memory) DuckDB: a batch is claimed once, a
duplicate learns what the first delivery wrote, a run ends once, an abort un-applies the run's batches but
keeps its end marker. The PostgreSQL dialect runs the same statements in tests/integration."""

from __future__ import annotations

import duckdb
import pytest

from services.load.sinks.base import WriteResult
from services.load.sinks.ledger import DEDUPE, DUCKDB, LEDGER, POSTGRES, BatchLedger, end_of_run_marker

pytestmark = pytest.mark.unit


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(":memory:")
    for statement in BatchLedger(DUCKDB, "x").bootstrap():
        connection.execute(statement)
    return connection


def batches(con: duckdb.DuckDBPyConnection, destination: str) -> dict[str, int]:
    rows = con.execute(f"SELECT batch_id, rows FROM {LEDGER} WHERE destination = ?", [destination]).fetchall()
    return dict(rows)


def test_bootstrap_is_idempotent(con: duckdb.DuckDBPyConnection) -> None:
    for statement in BatchLedger(DUCKDB, "x").bootstrap():
        con.execute(statement)
    assert batches(con, "x") == {}


def test_a_batch_is_claimed_once_and_a_duplicate_learns_what_was_written(
    con: duckdb.DuckDBPyConnection,
) -> None:
    ledger = BatchLedger(DUCKDB, "duckdb:t")
    assert ledger.claim_batch(con, "run-1", "task:0", 10) is None
    ledger.record_rows(con, "task:0", 7)  # a merge wrote fewer rows than the batch carried
    again = ledger.claim_batch(con, "run-1", "task:0", 10)
    assert again == WriteResult(applied=False, rows_written=7, rows_deduplicated=0)
    # Another destination has its own ledger rows: the same batch id is new there.
    assert BatchLedger(DUCKDB, "duckdb:other").claim_batch(con, "run-1", "task:0", 10) is None
    assert batches(con, "duckdb:t") == {"task:0": 7}


def test_a_run_ends_once_and_an_abort_forgets_its_batches(con: duckdb.DuckDBPyConnection) -> None:
    ledger = BatchLedger(DUCKDB, "duckdb:t")
    for seq in range(3):
        assert ledger.claim_batch(con, "run-1", f"task:{seq}", 5) is None
    assert ledger.claim_batch(con, "run-2", "other:0", 5) is None
    assert ledger.claim_end_of_run(con, "run-1")
    assert not ledger.claim_end_of_run(con, "run-1")  # finalize/abort twice: the second does nothing
    ledger.forget_batches(con, "run-1")
    assert batches(con, "duckdb:t") == {end_of_run_marker("run-1"): 0, "other:0": 5}
    assert ledger.claim_batch(con, "run-1", "task:0", 5) is None  # a re-run applies it again


def test_dedupe_keys_are_forgotten_per_run(con: duckdb.DuckDBPyConnection) -> None:
    ledger = BatchLedger(DUCKDB, "duckdb:t")
    for run_id in ("run-1", "run-2"):
        con.execute(f"INSERT INTO {DEDUPE} VALUES (?, ?, ?)", [run_id, "duckdb:t", "h1"])
    ledger.forget_dedupe_keys(con, "run-1")
    assert con.execute(f"SELECT run_id FROM {DEDUPE}").fetchall() == [("run-2",)]


def test_dialects_spell_parameters_and_types() -> None:
    assert POSTGRES.parameters(3) == ["$1", "$2", "$3"]
    assert DUCKDB.parameters(3) == ["?", "?", "?"]
    postgres_ddl = " ".join(BatchLedger(POSTGRES, "p").bootstrap())
    assert "key_hash uuid" in postgres_ddl and "aoetl_ledger_by_run" in postgres_ddl
    assert "key_hash VARCHAR" in " ".join(BatchLedger(DUCKDB, "d").bootstrap())
