"""DuckDB file sink: the same exactly-once contract as PostgreSQL, with the ledger in the same file.

Each batch is one DuckDB transaction: the ledger claim (``ledger``, the protocol the PostgreSQL sink
keeps too), create/evolve the table, then an ``INSERT ... BY NAME`` / ``MERGE INTO`` that reads the Arrow
batch in place (DuckDB scans a registered ``pyarrow.Table`` without copying it). Replace mode loads
``<table>__aoetl_<short run id>`` and ``finalize`` drops/renames in one transaction. A batch's bytes are
not reported (``WriteResult.bytes_written`` is None): the file's blocks are shared by every table and the
ledger and written at checkpoints, so no byte count belongs to one batch.

Single writer: DuckDB lets one *process* open a file for writing. This sink opens the file for each
operation and closes it after, so several load replicas can take turns; a replica that finds the file
locked gets ``DestinationUnavailableError`` (transient) and its retry succeeds once the holder is done.
That serializes all writers of one file: for parallel multi-replica loads use PostgreSQL. Threads of one
process share the open database (DuckDB's instance cache) and are serialized by its optimistic
transactions: a conflicting commit is reported as transient too.

Policy (``shared.policy``): the file only inside the data roots, checked at every open: the path is
resolved and checked, DuckDB opens the resolved real path, and the path is resolved again once open (a
symlink swapped in between is refused with ``PolicyViolation`` and the connection closed before any
statement runs). The table cannot be one of the sinks' own names (``__aoetl``), checked when the sink is
built. Errors are scrubbed of the values DuckDB quotes (``shared.redaction``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import pyarrow as pa

from services.load.exceptions import DestinationUnavailableError, IncompatibleSchemaError
from services.load.sinks.ledger import DEDUPE, DUCKDB, BatchLedger, SqlLedgerSink
from services.load.sinks.naming import short_run_id
from shared.errors import AoetlError, DataError
from shared.policy.errors import PolicyViolation
from shared.policy.files import confine
from shared.policy.names import require_table
from shared.policy.settings import load_policy
from shared.redaction import scrub
from shared.spec.models import DuckDBDestination, WriteMode
from shared.sql import quote_ident

_INPUT = "aoetl_input"  # the registered Arrow batch
_FRESH = "aoetl_fresh"  # temp table: the batch rows whose dedupe key is new in the run
_ORDINAL = "__aoetl_ord"
_KEY_HASH = "__aoetl_h"

_INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
# Which batch type families each column family takes; INSERT casts within a family.
_ACCEPTS: dict[str, frozenset[str]] = {
    "integer": frozenset({"integer"}),
    "float": frozenset({"float", "integer"}),
    "decimal": frozenset({"decimal", "integer"}),
}


def _family(duckdb_type: str) -> str:
    t = duckdb_type.upper()
    if t in _INTEGERS:
        return "integer"
    if t in {"FLOAT", "DOUBLE", "REAL"}:
        return "float"
    if t.startswith("DECIMAL"):
        return "decimal"
    if t.startswith("TIMESTAMPTZ") or t == "TIMESTAMP WITH TIME ZONE":
        return "timestamptz"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return t


def _accepts(column_type: str, batch_type: str) -> bool:
    if batch_type == '"NULL"':  # an all-null column fits any column
        return True
    column_family, batch_family = _family(column_type), _family(batch_type)
    return batch_family in _ACCEPTS.get(column_family, frozenset({column_family}))


class DuckDBSink(SqlLedgerSink[duckdb.DuckDBPyConnection, str]):
    """Sink for a ``DuckDBDestination``."""

    def __init__(self, destination: DuckDBDestination, *, roots: Sequence[Path] | None = None) -> None:
        """``roots``: the data roots (default: this process's policy, read at each open)."""
        super().__init__()
        require_table(destination.table)
        self._roots = roots
        self._dest = destination
        self._mode = destination.mode
        self._merge_keys = destination.keys
        self._target = destination.table
        self._path = Path(destination.path)
        self._ledger = BatchLedger(DUCKDB, f"duckdb:{destination.table}")

    def close(self) -> None:
        """Nothing is held between operations."""

    def staging_table(self, run_id: str) -> str:
        return f"{self._dest.table}__aoetl_{short_run_id(run_id)}"

    # ----------------------------------------------------------------------- the ledger sink's steps
    def _write_rows(
        self,
        con: duckdb.DuckDBPyConnection,
        run_id: str,
        target: str,
        table: pa.Table,
        dedupe_keys: Sequence[str],
    ) -> tuple[int, int]:
        ordinal = pa.array(range(table.num_rows), pa.int64())
        con.register(_INPUT, table.append_column(_ORDINAL, ordinal))
        self._ensure_table(con, target)
        source, kept = _INPUT, table.num_rows
        if dedupe_keys:
            source, kept = _FRESH, self._keep_new_keys(con, run_id, dedupe_keys)
        merge = self._mode is WriteMode.MERGE
        written = self._merge(con, target, source) if merge else self._append(con, target, source)
        return written, kept

    def _swap_in(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        staging, target = self.staging_table(run_id), quote_ident(self._dest.table)
        if self._columns(con, staging):
            con.execute(f"DROP TABLE IF EXISTS {target}")
            con.execute(f"ALTER TABLE {quote_ident(staging)} RENAME TO {target}")
        elif self._columns(con, self._dest.table):  # the run wrote nothing: the table ends empty
            con.execute(f"DELETE FROM {target}")

    def _drop_staging(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        con.execute(f"DROP TABLE IF EXISTS {quote_ident(self.staging_table(run_id))}")

    # ------------------------------------------------------------------------------------ internals
    @contextmanager
    def _transaction(self, action: str) -> Iterator[duckdb.DuckDBPyConnection]:
        what = f"{action} {self._path}:{self._dest.table}"
        roots = load_policy().data_roots if self._roots is None else self._roots
        real = confine(str(self._path), roots)
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(str(real))
        except (duckdb.IOException, OSError) as exc:  # typically: another process holds the write lock
            raise DestinationUnavailableError(
                f"cannot open DuckDB file while {what}: {scrub(str(exc))}"
            ) from exc
        try:
            if confine(str(self._path), roots) != real:
                raise PolicyViolation(f"{self._path}: the path changed while the file was opened")
            con.execute("BEGIN TRANSACTION")
            for statement in self._ledger.bootstrap():
                con.execute(statement)
            yield con
            con.execute("COMMIT")
        except BaseException as exc:
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise self._translate(exc, what) from exc
            raise
        finally:
            con.close()

    @staticmethod
    def _translate(exc: duckdb.Error, what: str) -> AoetlError:
        if isinstance(exc, duckdb.TransactionException | duckdb.IOException):
            return DestinationUnavailableError(f"DuckDB busy while {what}: {scrub(str(exc))}")
        return DataError(f"DuckDB rejected {what}: {scrub(str(exc))}")

    @staticmethod
    def _columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return {name: data_type for name, data_type in rows}

    def _ensure_table(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        described = con.execute(f"DESCRIBE SELECT * EXCLUDE ({_ORDINAL}) FROM {_INPUT}").fetchall()
        batch_types = {row[0]: row[1] for row in described}

        def new_column_type(name: str) -> str:
            return "VARCHAR" if batch_types[name] == '"NULL"' else batch_types[name]

        columns = self._columns(con, table)
        if not columns:
            if table != self._dest.table and self._columns(con, self._dest.table):
                template = quote_ident(self._dest.table)
                con.execute(f"CREATE TABLE {quote_ident(table)} AS SELECT * FROM {template} LIMIT 0")
                columns = self._columns(con, table)
            else:
                defs = ", ".join(f"{quote_ident(n)} {new_column_type(n)}" for n in batch_types)
                con.execute(f"CREATE TABLE {quote_ident(table)} ({defs})")
                return
        for name, batch_type in batch_types.items():
            if name not in columns:
                con.execute(
                    f"ALTER TABLE {quote_ident(table)} ADD COLUMN {quote_ident(name)} {new_column_type(name)}"
                )
            elif not _accepts(columns[name], batch_type):
                raise IncompatibleSchemaError(f"{self._path}:{table}", name, columns[name], batch_type)

    def _keep_new_keys(self, con: duckdb.DuckDBPyConnection, run_id: str, keys: Sequence[str]) -> int:
        """Materialize the batch rows whose key the run has not seen (first occurrence wins) and record
        their keys. The check and the insert are in the batch's transaction; a concurrent writer of the
        same file conflicts at commit and retries."""
        key_row = ", ".join(quote_ident(k) for k in keys)
        con.execute(
            f"CREATE TEMP TABLE {_FRESH} AS SELECT * EXCLUDE ({_KEY_HASH}) FROM ("
            f"  SELECT DISTINCT ON ({_KEY_HASH}) *, md5(CAST(row({key_row}) AS VARCHAR)) AS {_KEY_HASH}"
            f"  FROM {_INPUT} ORDER BY {_KEY_HASH}, {_ORDINAL}"
            f") b WHERE NOT EXISTS (SELECT 1 FROM {DEDUPE} d"
            f"  WHERE d.destination = ? AND d.run_id = ? AND d.key_hash = b.{_KEY_HASH})",
            [self._ledger.destination, run_id],
        )
        con.execute(
            f"INSERT INTO {DEDUPE} (run_id, destination, key_hash)"
            f" SELECT ?, ?, md5(CAST(row({key_row}) AS VARCHAR)) FROM {_FRESH}",
            [run_id, self._ledger.destination],
        )
        count = con.execute(f"SELECT count(*) FROM {_FRESH}").fetchone()
        return int(count[0]) if count else 0

    @staticmethod
    def _append(con: duckdb.DuckDBPyConnection, target: str, source: str) -> int:
        result = con.execute(
            f"INSERT INTO {quote_ident(target)} BY NAME"
            f" SELECT * EXCLUDE ({_ORDINAL}) FROM {source} ORDER BY {_ORDINAL}"
        ).fetchone()
        return int(result[0]) if result else 0

    def _merge(self, con: duckdb.DuckDBPyConnection, target: str, source: str) -> int:
        """Upsert on the keys; of several rows with one key in a batch, the last one wins."""
        names = [
            row[0] for row in con.execute(f"DESCRIBE SELECT * EXCLUDE ({_ORDINAL}) FROM {source}").fetchall()
        ]
        keys = [quote_ident(k) for k in self._dest.keys]
        key_list = ", ".join(keys)
        match = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        updates = ", ".join(
            f"{quote_ident(n)} = s.{quote_ident(n)}" for n in names if n not in self._dest.keys
        )
        cols = ", ".join(quote_ident(n) for n in names)
        values = ", ".join(f"s.{quote_ident(n)}" for n in names)
        result = con.execute(
            f"MERGE INTO {quote_ident(target)} t USING ("
            f"  SELECT DISTINCT ON ({key_list}) * FROM {source} ORDER BY {key_list}, {_ORDINAL} DESC"
            f") s ON ({match})"
            + (f" WHEN MATCHED THEN UPDATE SET {updates}" if updates else "")
            + f" WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
        ).fetchone()
        return int(result[0]) if result else 0
