"""PostgreSQL sink: each batch is one transaction holding the rows *and* its ledger row.

Bulk path, measured on 1M rows x 10 columns (bigint, double, text, boolean, date, timestamptz) against
PostgreSQL 15 on this project's 2-core machine: psycopg 3 ``COPY ... FROM STDIN (FORMAT csv)`` fed by
``pyarrow.csv.write_csv`` bytes took 3.9-4.1 s (1.8 s of it just formatting CSV), ADBC ``adbc_ingest``
(binary COPY encoded from Arrow in C++) took 2.1-2.4 s. ADBC is ~1.8x faster, and since every statement
below runs on the one ADBC connection, the COPY shares its transaction with the ledger insert. So this sink
talks to PostgreSQL through ADBC only. ADBC reports the rows of a COPY, not its payload's size, so a
batch's bytes are not reported (``WriteResult.bytes_written`` is None; see ``ledger``).

Per batch, in ONE transaction: claim the batch in the ledger (``ledger``: no claim means the batch was
already applied, or is being applied by another replica which we wait for); create or evolve the table;
then either COPY straight into the table (append) or COPY into a temp table and ``INSERT ... SELECT`` from
it (merge upsert, cross-batch dedupe). A lost connection or a killed backend rolls the whole transaction
back, so a retry applies the batch exactly once.

Connections: a sink takes an idle connection to its DSN from ``pg_connections`` (else connects and runs
the session settings and the ledger's bootstrap) and gives it back when its run ends or it is closed: a run
into a table no sink has written yet starts no PostgreSQL backend. A connection that failed is closed,
never given back.

Replace mode loads into ``<table>__aoetl_<short run id>``; ``finalize`` renames it over the table in one
transaction. Readers block for the instant of the rename and then see the new table, never a partial one.
Views depending on the replaced table make the swap fail (terminal): PostgreSQL binds views to the old
table, which the swap drops.

Policy (``shared.policy.names``): the table cannot be in the system's schema (the ledger's) or PostgreSQL's
own, nor carry the sinks' reserved ``__aoetl`` mark, checked when the sink is built, before any
connection: ``mode: replace`` on the ledger would otherwise truncate it. The DSN is the secret of the
connection the destination names (``shared.policy.connections``), checked to parse when the sink is
opened. Errors are ``scrub``-bed (``shared.redaction``): the values PostgreSQL quotes are described, and
connection material it may quote is masked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from services.load.exceptions import DestinationUnavailableError, IncompatibleSchemaError
from services.load.sinks import pg_connections
from services.load.sinks.ledger import DEDUPE, POSTGRES, BatchLedger, SqlLedgerSink
from services.load.sinks.naming import short_run_id
from services.load.sinks.pg_types import UnmappedTypeError, conform_column, pg_type_for
from shared.errors import AoetlError, DataError
from shared.policy.connections import postgres_dsn
from shared.policy.names import require_table
from shared.redaction import scrub
from shared.spec.models import PostgresDestination, WriteMode
from shared.sql import is_transient_database_error, quote_ident

_TEMP_BATCH = "aoetl_batch"
# Rows per Arrow record batch handed to ADBC's COPY. The driver encodes and sends one record batch at a
# time, so with the batch in small chunks PostgreSQL parses one chunk while the driver encodes the next;
# as one 75k-row chunk the two ran one after the other (measured, 75k rows x 10 columns: 155 ms per COPY
# as one chunk, 85 ms in 8k-row chunks, 63 ms in 2k-row chunks, the client's CPU the same).
COPY_CHUNK_ROWS = 4096
_ORDINAL = "__aoetl_ord"  # arrival order inside a batch: the first of duplicates is kept, the last merged
_KEY_HASH = "__aoetl_h"

# Replicas starting together must not race on the ledger's CREATE statements.
_BOOTSTRAP_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('aoetl:bootstrap', 0))"
# Key hashes are md5 of the keys' text form, which depends on these settings: pin them so that every
# replica hashes the same key to the same value.
_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
)
Cursor = Any  # adbc_driver_manager.dbapi.Cursor; its stubs are too loose to be worth spelling out


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


class PostgresSink(SqlLedgerSink[Cursor, _Table]):
    """Sink for a ``PostgresDestination``. One connection at a time (taken from and given back to
    ``pg_connections``), used by one thread at a time."""

    def __init__(self, destination: PostgresDestination, *, dsn: str | None = None) -> None:
        super().__init__()
        require_table(destination.table)
        self._dsn = dsn or postgres_dsn(destination)
        self._dest = destination
        self._mode = destination.mode
        self._merge_keys = destination.keys
        schema, _, name = destination.table.rpartition(".")
        self._target = _Table(schema or "public", name)
        self._ledger = BatchLedger(POSTGRES, f"postgres:{self._target.display}")
        self._conn: Any = None
        self._columns: dict[_Table, dict[str, str]] = {}  # column name -> format_type(), per table
        self._unique_index_ok = False

    def close(self) -> None:
        """Called between transactions only: the connection is healthy and idle, so it goes back to the
        pool for the next sink of this DSN (``pg_connections``)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            pg_connections.give_back(self._dsn, conn)

    def _discard(self) -> None:
        """A connection that failed is closed, never pooled: a fresh one is made on the next call."""
        conn, self._conn = self._conn, None
        if conn is not None:
            pg_connections.close_quietly(conn)

    def staging_table(self, run_id: str) -> _Table:
        suffix = f"__aoetl_{short_run_id(run_id)}"
        return _Table(self._target.schema, self._target.name[: 63 - len(suffix)] + suffix)

    # ----------------------------------------------------------------------- the ledger sink's steps
    def _write_rows(
        self, cur: Cursor, run_id: str, target: _Table, table: pa.Table, dedupe_keys: Sequence[str]
    ) -> tuple[int, int]:
        columns = self._ensure_table(cur, target, table)
        batch = self._conform(target, columns, table)
        if self._mode is not WriteMode.MERGE and not dedupe_keys:
            cur.adbc_ingest(target.name, _chunked(batch), mode="append", db_schema_name=target.schema)
            return batch.num_rows, batch.num_rows
        return self._apply_via_temp_table(cur, run_id, target, columns, batch, dedupe_keys)

    def _drop_staging(self, cur: Cursor, run_id: str) -> None:
        cur.execute(f"DROP TABLE IF EXISTS {self.staging_table(run_id).sql}")

    def _after_end_of_run(self, run_id: str) -> None:
        self._columns.pop(self.staging_table(run_id), None)
        self._columns.pop(self._target, None)
        # the run's batches are in: the next run, whichever table it writes, takes this backend
        self.close()

    # ------------------------------------------------------------------------------- transactions
    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = pg_connections.take(self._dsn, self._connect)
        return self._conn

    def _connect(self) -> Any:
        try:
            conn = adbc.connect(self._dsn)
            with conn.cursor() as cur:
                for statement in (*_SESSION, _BOOTSTRAP_LOCK, *self._ledger.bootstrap()):
                    cur.execute(statement)
            conn.commit()
        except adbc_driver_manager.Error as exc:
            raise DestinationUnavailableError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc
        return conn

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Cursor]:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException as exc:
            # DDL of this transaction is rolled back too, so cached table shapes may be wrong now (and a
            # table fixed by hand after an IncompatibleSchemaError is read afresh).
            self._columns.clear()
            self._unique_index_ok = False
            try:
                conn.rollback()
            except adbc_driver_manager.Error:
                self._discard()
            if isinstance(exc, adbc_driver_manager.Error):
                raise self._translate(exc, f"{action} {self._target.display}") from exc
            raise

    def _translate(self, exc: adbc_driver_manager.Error, action: str) -> AoetlError:
        if is_transient_database_error(exc):  # the rule the PostgreSQL source applies too
            self._discard()  # a fresh connection is made on the next call
            return DestinationUnavailableError(f"PostgreSQL unavailable while {action}: {_first_line(exc)}")
        return DataError(f"PostgreSQL rejected {action}: {_first_line(exc)}")

    # ------------------------------------------------------------------------------- table shape
    def _read_columns(self, cur: Cursor, table: _Table) -> dict[str, str]:
        cur.execute(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            parameters=(table.sql,),
        )
        return {name: pg_type for name, pg_type in cur.fetchall()}

    def _ensure_table(self, cur: Cursor, table: _Table, batch: pa.Table) -> dict[str, str]:
        """Create the table or add the batch's new columns; return the table's columns."""
        merge = self._mode is WriteMode.MERGE
        columns = self._columns.get(table) or self._read_columns(cur, table)
        if columns and all(n in columns for n in batch.column_names) and (self._unique_index_ok or not merge):
            self._columns[table] = columns
            return columns
        # DDL needed: serialize it with other replicas writing this table, then look again.
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters=(f"aoetl:ddl:{table.sql}",)
        )
        columns = self._read_columns(cur, table)
        if not columns:
            template = self._read_columns(cur, self._target) if table != self._target else {}
            if template:  # replace mode: the new table keeps the old one's columns, defaults and indexes
                cur.execute(f"CREATE TABLE {table.sql} (LIKE {self._target.sql} INCLUDING ALL)")
                columns = dict(template)
            else:
                defs = [f"{quote_ident(f.name)} {self._pg_type(table, f)}" for f in batch.schema]
                cur.execute(f"CREATE TABLE {table.sql} ({', '.join(defs)})")
                columns = {f.name: self._pg_type(table, f) for f in batch.schema}
        for field in batch.schema:
            if field.name not in columns:
                pg_type = self._pg_type(table, field)
                cur.execute(f"ALTER TABLE {table.sql} ADD COLUMN {quote_ident(field.name)} {pg_type}")
                columns[field.name] = pg_type
        if merge:
            self._ensure_unique_index(cur, table)
        self._columns[table] = columns
        return columns

    @staticmethod
    def _pg_type(table: _Table, field: pa.Field) -> str:
        try:
            return pg_type_for(field.type)
        except UnmappedTypeError as exc:
            raise IncompatibleSchemaError(
                table.display, field.name, "(none)", str(field.type), "no PostgreSQL column type for it"
            ) from exc

    def _ensure_unique_index(self, cur: Cursor, table: _Table) -> None:
        """ON CONFLICT (keys) needs a unique index on exactly the merge keys."""
        cur.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL"
            " GROUP BY i.indexrelid",
            parameters=(table.sql,),
        )
        wanted = set(self._dest.keys)
        if not any(set(row[0]) == wanted for row in cur.fetchall()):
            name = quote_ident(f"{table.name[:50]}__aoetl_keys")
            keys = ", ".join(quote_ident(k) for k in self._dest.keys)
            cur.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table.sql} ({keys})")
        self._unique_index_ok = True

    def _conform(self, table: _Table, columns: dict[str, str], batch: pa.Table) -> pa.Table:
        arrays = [
            conform_column(table.display, name, columns[name], batch.column(name))
            for name in batch.column_names
        ]
        return pa.Table.from_arrays(arrays, names=batch.column_names)

    # ------------------------------------------------------------------------------- merge / dedupe
    def _apply_via_temp_table(
        self,
        cur: Cursor,
        run_id: str,
        target: _Table,
        columns: dict[str, str],
        batch: pa.Table,
        dedupe_keys: Sequence[str],
    ) -> tuple[int, int]:
        """COPY into a temp table, then one INSERT ... SELECT. Returns (rows written, rows kept by dedupe)."""
        defs = ", ".join(f"{quote_ident(n)} {columns[n]}" for n in batch.column_names)
        cur.execute(f"CREATE TEMP TABLE {_TEMP_BATCH} ({defs}, {_ORDINAL} bigint) ON COMMIT DROP")
        ordinal = pa.array(range(batch.num_rows), pa.int64())
        staged = _chunked(batch.append_column(_ORDINAL, ordinal))
        cur.adbc_ingest(_TEMP_BATCH, staged, mode="append", temporary=True)

        names = [quote_ident(n) for n in batch.column_names]
        ctes: list[str] = []
        source = f"pg_temp.{_TEMP_BATCH}"
        kept = f"(SELECT count(*) FROM pg_temp.{_TEMP_BATCH})"
        parameters: tuple[str, ...] | None = None
        if dedupe_keys:
            key_row = ", ".join(f"b.{quote_ident(k)}" for k in dedupe_keys)
            ctes.append(
                f"candidates AS (SELECT DISTINCT ON ({_KEY_HASH}) * FROM (SELECT b.*,"
                f" md5(row({key_row})::text)::uuid AS {_KEY_HASH} FROM pg_temp.{_TEMP_BATCH} b) x"
                f" ORDER BY {_KEY_HASH}, {_ORDINAL})"
            )
            # Inserted in this same transaction: a key another replica committed first comes back
            # from no RETURNING, one it has in flight makes us wait for its outcome.
            ctes.append(
                f"fresh AS (INSERT INTO {DEDUPE} (destination, run_id, key_hash) SELECT $1, $2, {_KEY_HASH}"
                " FROM candidates ON CONFLICT DO NOTHING RETURNING key_hash)"
            )
            source = f"(SELECT c.* FROM candidates c JOIN fresh f ON f.key_hash = c.{_KEY_HASH})"
            kept = "(SELECT count(*) FROM fresh)"
            parameters = (self._ledger.destination, run_id)
        selected = ", ".join(f"s.{n}" for n in names)
        if self._mode is WriteMode.MERGE:
            keys = ", ".join(f"s.{quote_ident(k)}" for k in self._dest.keys)
            updates = ", ".join(
                f"{n} = EXCLUDED.{n}"
                for c, n in zip(batch.column_names, names, strict=True)
                if c not in self._dest.keys
            )
            select = (
                f"SELECT DISTINCT ON ({keys}) {selected} FROM {source} s ORDER BY {keys}, s.{_ORDINAL} DESC"
            )
            conflict_target = ", ".join(quote_ident(k) for k in self._dest.keys)
            on_conflict = f" ON CONFLICT ({conflict_target}) DO " + (
                f"UPDATE SET {updates}" if updates else "NOTHING"
            )
        else:
            select = f"SELECT {selected} FROM {source} s ORDER BY s.{_ORDINAL}"
            on_conflict = ""
        ctes.append(
            f"written AS (INSERT INTO {target.sql} ({', '.join(names)}) {select}{on_conflict} RETURNING 1)"
        )
        cur.execute(
            f"WITH {', '.join(ctes)} SELECT (SELECT count(*) FROM written), {kept}", parameters=parameters
        )
        written, kept_rows = cur.fetchone()
        return int(written), int(kept_rows)

    # ------------------------------------------------------------------------------- end of run
    def _swap_in(self, cur: Cursor, run_id: str) -> None:
        staging = self.staging_table(run_id)
        staged = self._read_columns(cur, staging)
        current = self._read_columns(cur, self._target)
        if not staged:  # the run wrote no batch: replacing with nothing leaves the table empty
            if current:
                cur.execute(f"TRUNCATE {self._target.sql}")
            return
        if current:
            retired = f"{self._target.name[:40]}__aoetl_retired"
            cur.execute(f"ALTER TABLE {self._target.sql} RENAME TO {quote_ident(retired)}")
            cur.execute(f"ALTER TABLE {staging.sql} RENAME TO {quote_ident(self._target.name)}")
            cur.execute(f"DROP TABLE {quote_ident(self._target.schema)}.{quote_ident(retired)}")
        else:
            cur.execute(f"ALTER TABLE {staging.sql} RENAME TO {quote_ident(self._target.name)}")


def _chunked(table: pa.Table) -> pa.Table:
    """The same rows as record batches of at most ``COPY_CHUNK_ROWS`` (slices: no copy)."""
    return pa.Table.from_batches(table.to_batches(max_chunksize=COPY_CHUNK_ROWS), table.schema)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return scrub(text.splitlines()[0]) if text else type(exc).__name__
