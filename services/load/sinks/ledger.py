"""The ledger protocol of the SQL sinks (PostgreSQL, DuckDB): what makes each batch apply exactly once and
each run end exactly once, written once for both.

* ``aoetl.aoetl_ledger`` holds one row per (destination, batch id), inserted in the *same transaction* as
  the batch's rows with ``ON CONFLICT DO NOTHING RETURNING``. No row back means the batch was already
  applied (or is being applied by another writer, whose outcome the insert waits for): the sink writes
  nothing and answers with what the first delivery wrote, so run totals stay exact.
* Replace mode loads a staging table. An end-of-run row (``__end_of_run__:<run id>``) makes ``finalize``
  (swap the staged table in) and ``abort`` (drop it) happen once: the second call finds the row and does
  nothing, so a finalized run is never undone by a late abort. An abort also deletes the run's batch rows:
  the staged rows are gone, so a re-run must apply those batches again.
* ``aoetl.dedupe`` holds the key hashes a run has written (cross-batch dedupe); they are deleted when the
  run ends, since its batches stay guarded by the ledger. A run whose spec does not dedupe has none: in
  append or merge mode its end has nothing to do in the database and opens no transaction. The sink knows
  this of the runs it wrote a batch of (the spec, the same for all of a run's batches, gave that write no
  dedupe keys); a run it knows nothing of (written by another replica, or before a restart) ends in a
  transaction as before, so a missing or forgotten memory costs a round trip, never a key hash left behind.

``SqlLedgerSink`` runs this protocol; each sink supplies its transaction, how it writes a batch's rows and
how it swaps or drops a staging table, and a ``LedgerDialect`` says how its SQL spells parameters and
the key-hash type. The sinks' own modules say how they write rows (ADBC COPY vs DuckDB's Arrow scans).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa

from services.load.sinks.base import WriteResult, require_columns
from shared.policy.names import SYSTEM_SCHEMA
from shared.spec.models import WriteMode

# In the schema the spec policy keeps every destination out of (``shared.policy.names``).
LEDGER = f"{SYSTEM_SCHEMA}.aoetl_ledger"
DEDUPE = f"{SYSTEM_SCHEMA}.dedupe"

# Runs a sink remembers having written without dedupe keys until they end; the oldest is forgotten first
# (a run that never ends, e.g. its orchestrator gave up on it, must not grow the memory): forgetting one
# only costs its end the transaction every run had before.
MAX_RUNS_REMEMBERED = 65_536


class SqlCursor(Protocol):
    """What the protocol needs of a connection: an ADBC cursor and a DuckDB connection both fit."""

    def execute(self, operation: str, parameters: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...


@dataclass(frozen=True)
class LedgerDialect:
    """Where the two databases' SQL differs for the ledger."""

    numbered_parameters: bool  # ``$1, $2`` (PostgreSQL through ADBC) or ``?`` (DuckDB)
    key_hash_type: str  # the dedupe table's hash column: PostgreSQL stores md5 as uuid (16 bytes)
    index_by_run: bool  # abort deletes a run's rows: worth an index where many writers share a ledger

    def parameters(self, count: int) -> list[str]:
        return [f"${i}" if self.numbered_parameters else "?" for i in range(1, count + 1)]


POSTGRES = LedgerDialect(numbered_parameters=True, key_hash_type="uuid", index_by_run=True)
DUCKDB = LedgerDialect(numbered_parameters=False, key_hash_type="VARCHAR", index_by_run=False)


class BatchLedger:
    """The ledger statements of one destination (``destination`` is its key in the ledger rows)."""

    def __init__(self, dialect: LedgerDialect, destination: str) -> None:
        self.dialect = dialect
        self.destination = destination
        p1, p2, p3, p4 = dialect.parameters(4)
        claim = (
            f"INSERT INTO {LEDGER} (run_id, batch_id, destination, rows) VALUES ({p1}, {p2}, {p3}, {{rows}})"
        )
        self._claim = claim.format(rows=p4) + " ON CONFLICT DO NOTHING RETURNING 1"
        self._claim_end = claim.format(rows="0") + " ON CONFLICT DO NOTHING RETURNING 1"
        self._rows_of = f"SELECT rows FROM {LEDGER} WHERE destination = {p1} AND batch_id = {p2}"
        self._record = f"UPDATE {LEDGER} SET rows = {p1} WHERE destination = {p2} AND batch_id = {p3}"
        self._forget_batches = (
            f"DELETE FROM {LEDGER} WHERE destination = {p1} AND run_id = {p2} AND batch_id <> {p3}"
        )
        self._forget_keys = f"DELETE FROM {DEDUPE} WHERE destination = {p1} AND run_id = {p2}"

    def bootstrap(self) -> tuple[str, ...]:
        """Idempotent DDL of the ledger and dedupe tables (``text`` is DuckDB's VARCHAR too)."""
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {SYSTEM_SCHEMA}",
            f"CREATE TABLE IF NOT EXISTS {LEDGER} (run_id text NOT NULL, batch_id text NOT NULL,"
            " destination text NOT NULL, rows bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (destination, batch_id))",
        ]
        if self.dialect.index_by_run:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS aoetl_ledger_by_run ON {LEDGER} (destination, run_id)"
            )
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {DEDUPE} (run_id text NOT NULL, destination text NOT NULL,"
            f" key_hash {self.dialect.key_hash_type} NOT NULL, PRIMARY KEY (destination, run_id, key_hash))"
        )
        return tuple(statements)

    def claim_batch(self, cur: SqlCursor, run_id: str, batch_id: str, rows: int) -> WriteResult | None:
        """None when this transaction now owns the batch; else what its first delivery wrote."""
        cur.execute(self._claim, (run_id, batch_id, self.destination, rows))
        if cur.fetchone() is not None:
            return None
        cur.execute(self._rows_of, (self.destination, batch_id))
        row = cur.fetchone()
        return WriteResult(applied=False, rows_written=int(row[0]) if row else 0, rows_deduplicated=0)

    def record_rows(self, cur: SqlCursor, batch_id: str, rows: int) -> None:
        """The rows a claimed batch really wrote (a merge or dedupe may write fewer than it carried)."""
        cur.execute(self._record, (rows, self.destination, batch_id))

    def claim_end_of_run(self, cur: SqlCursor, run_id: str) -> bool:
        cur.execute(self._claim_end, (run_id, end_of_run_marker(run_id), self.destination))
        return cur.fetchone() is not None

    def forget_batches(self, cur: SqlCursor, run_id: str) -> None:
        """The run's batches count as not applied any more (their staged rows were dropped)."""
        cur.execute(self._forget_batches, (self.destination, run_id, end_of_run_marker(run_id)))

    def forget_dedupe_keys(self, cur: SqlCursor, run_id: str) -> None:
        cur.execute(self._forget_keys, (self.destination, run_id))


def end_of_run_marker(run_id: str) -> str:
    return f"__end_of_run__:{run_id}"


CursorT = TypeVar("CursorT", bound=SqlCursor)
TableT = TypeVar("TableT")


class SqlLedgerSink(ABC, Generic[CursorT, TableT]):
    """A sink that keeps the ledger protocol. Subclasses set ``_ledger``, ``_mode``, ``_merge_keys`` and
    ``_target`` and implement the database-specific steps."""

    _ledger: BatchLedger
    _mode: WriteMode
    _merge_keys: Sequence[str]
    _target: TableT

    def __init__(self) -> None:
        self._runs_without_dedupe: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------------------ what a sink does
    @abstractmethod
    def _transaction(self, action: str) -> AbstractContextManager[CursorT]:
        """One database transaction: committed when the block ends, rolled back (and the error translated
        to ``DestinationUnavailableError`` or a terminal error naming ``action``) when it raises."""

    @abstractmethod
    def _write_rows(
        self, cur: CursorT, run_id: str, target: TableT, table: pa.Table, dedupe_keys: Sequence[str]
    ) -> tuple[int, int]:
        """Create or evolve ``target`` and write the batch into it: (rows written, rows kept by dedupe)."""

    @abstractmethod
    def staging_table(self, run_id: str) -> TableT: ...

    @abstractmethod
    def _swap_in(self, cur: CursorT, run_id: str) -> None:
        """Replace mode, end of a successful run: the staged table becomes the target table."""

    @abstractmethod
    def _drop_staging(self, cur: CursorT, run_id: str) -> None: ...

    def _after_end_of_run(self, run_id: str) -> None:
        """Called after ``finalize``/``abort`` committed (a sink may drop what it caches of the tables)."""

    # ------------------------------------------------------------------------------------ the protocol
    def write(
        self, run_id: str, batch_id: str, table: pa.Table, *, dedupe_keys: Sequence[str] = ()
    ) -> WriteResult:
        require_columns(table, dedupe_keys, "dedupe keys")
        if not dedupe_keys:
            self._remember_without_dedupe(run_id)
        if self._mode is WriteMode.MERGE:
            require_columns(table, self._merge_keys, "merge keys")
        target = self.staging_table(run_id) if self._mode is WriteMode.REPLACE else self._target
        with self._transaction(f"writing batch {batch_id} to") as cur:
            duplicate = self._ledger.claim_batch(cur, run_id, batch_id, table.num_rows)
            if duplicate is not None:
                return duplicate
            written, kept = self._write_rows(cur, run_id, target, table, dedupe_keys)
            if written != table.num_rows:
                self._ledger.record_rows(cur, batch_id, written)
            # bytes_written stays None (unknown) for both SQL sinks, deliberately. PostgreSQL: ADBC encodes
            # the binary COPY in C++ and reports rows only; the payload size is not exposed, and computing
            # it here would re-implement the driver's per-type encoding (numeric, text...), silently wrong
            # whenever it changes; a merge or dedupe writes other rows than the COPY carried anyway.
            # DuckDB scans the Arrow batch in place and writes blocks of a file shared by every table and
            # its own ledger, checkpointed later: no byte count belongs to one batch.
            return WriteResult(applied=True, rows_written=written, rows_deduplicated=table.num_rows - kept)

    def finalize(self, run_id: str) -> None:
        if self._ends_in_database(run_id):
            with self._transaction("finalizing") as cur:
                self._end_run(cur, run_id, finalized=True)
        self._after_end_of_run(run_id)

    def abort(self, run_id: str) -> None:
        if self._ends_in_database(run_id):
            with self._transaction("aborting") as cur:
                self._end_run(cur, run_id, finalized=False)
        self._after_end_of_run(run_id)

    def _remember_without_dedupe(self, run_id: str) -> None:
        self._runs_without_dedupe[run_id] = None
        self._runs_without_dedupe.move_to_end(run_id)
        if len(self._runs_without_dedupe) > MAX_RUNS_REMEMBERED:
            self._runs_without_dedupe.popitem(last=False)

    def _ends_in_database(self, run_id: str) -> bool:
        # An end of run was a transaction of its own for every run: in append mode without dedupe, an
        # empty DELETE of dedupe keys and a commit, two round trips of PostgreSQL per run for nothing
        # (15% of the load service's time at 10,000 concurrent 3-row runs, bench/bench_concurrent.py).
        written_without_dedupe = run_id in self._runs_without_dedupe
        self._runs_without_dedupe.pop(run_id, None)  # ended: a later end of it is a rare repeat
        return self._mode is WriteMode.REPLACE or not written_without_dedupe

    def _end_run(self, cur: CursorT, run_id: str, *, finalized: bool) -> None:
        if self._mode is WriteMode.REPLACE:
            if not self._ledger.claim_end_of_run(cur, run_id):
                return  # already finalized or aborted: idempotent, and a finalized run is not undone
            if finalized:
                self._swap_in(cur, run_id)
            else:
                self._drop_staging(cur, run_id)
                self._ledger.forget_batches(cur, run_id)
        self._ledger.forget_dedupe_keys(cur, run_id)
