"""PostgreSQL tables and queries, read as Arrow with the ADBC PostgreSQL driver.

Why ADBC: it streams the result with ``COPY ... (FORMAT binary)`` and decodes it in C++ straight into
Arrow record batches (~16 MiB each), so memory is bounded and no Python object is built per value.
Measured on the dev box, 1M rows x 6 columns (int8, text, float8, bool, date, timestamptz), one split:
ADBC 0.6-1.1 s (peak RSS 82 MiB; 99 MiB for 3M rows), psycopg 3 ``COPY (SELECT ...) TO STDOUT (FORMAT
csv)`` fed to pyarrow's streaming CSV reader 3.3-3.5 s (~115 MiB). psycopg is still used for the cheap
planning queries (min/max, EXPLAIN) and to render the query with safely quoted literals.

Types: bool, integers, floats, text, bytea, date, time, timestamp and timestamptz (UTC) keep their Arrow
types; every other type (numeric, json, uuid, interval, arrays, enums...) is cast to text on the server,
so no precision is lost and downstream stages only ever see plain Arrow types.

Safety (``shared.policy``): a ``query`` runs only as the one read-only SELECT the policy's SQL parser
accepted, in the form the parser printed it back (``shared.policy.sql``), and a ``table`` only outside
the system's schema. Every session starts with ``default_transaction_read_only`` on and the policy's
``statement_timeout`` (libpq ``options``, so both drivers get them before the first statement): every
statement of the source, the user's query included, runs in a READ ONLY transaction and is cancelled when
it runs too long (a terminal error naming the setting, not a retry).

Credentials: the DSN is the secret of the connection the source names (``shared.policy.connections``),
resolved where the connector acts. It is checked to parse before libpq sees it, and a DSN that does not
parse is reported without libpq's message (which quotes the offending part of the DSN, e.g. a badly
percent-encoded password); every other database error is built from ``shared.redaction.scrub``-bed text.

Splits: with ``split_column`` (an integer column), ``lower <= c < upper`` key ranges from a min/max query
at planning time; the last range is inclusive of the max, and the first one also takes rows whose
``split_column`` is NULL, so the ranges together cover every row exactly once.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import psycopg
import pyarrow as pa
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from shared.connectors.base import describe, number_splits, rebatch, whole_split
from shared.connectors.errors import SourceNotFoundError, SourceReadError, SourceUnavailableError
from shared.contracts import Split, SplitKind
from shared.errors import ConfigurationError
from shared.policy.connections import postgres_dsn
from shared.policy.errors import PolicyViolation
from shared.policy.settings import load_policy
from shared.policy.sql import UnsafeQueryError, normalize_select, source_table_problem
from shared.redaction import scrub
from shared.spec.models import PostgresSource
from shared.sql import is_transient_database_error

MAX_AUTO_SPLITS = 8
CONNECT_TIMEOUT_S = 10

model = PostgresSource  # the spec section it reads (``Connector.model``)
info = describe(
    PostgresSource,
    "A PostgreSQL table or SELECT query. Incremental with cursor_column/cursor_start; split into integer "
    "key ranges with split_column. Types are preserved (numeric, json, uuid and other types become text).",
    (SplitKind.WHOLE, SplitKind.KEY_RANGE),
)

# Type OIDs read natively; any other column is selected as ``::text``.
_NATIVE_OIDS = frozenset({16, 17, 20, 21, 23, 25, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184})
_INTEGER_OIDS = frozenset({20, 21, 23})
_ALL_COLUMNS = sql.SQL("*")
_NOT_FOUND_SQLSTATES = frozenset({"42P01", "3F000"})  # undefined table, undefined schema


_TIMED_OUT = "statement timeout"  # PostgreSQL: "canceling statement due to statement timeout"


def _timed_out(exc: Exception) -> bool:
    return _TIMED_OUT in str(exc)


def _timeout_error(where: str) -> SourceReadError:
    seconds = load_policy().postgres_statement_timeout_s
    return SourceReadError(
        f"{where}: the statement ran longer than the policy allows ({seconds:g} s, "
        "AOETL_POLICY_POSTGRES_STATEMENT_TIMEOUT_S)"
    )


@contextmanager
def _translate_errors(where: str) -> Iterator[None]:
    """Database errors as the connector's errors, their text scrubbed of the values PostgreSQL quotes
    (``shared.redaction``: a failed cast names the value, a key violation the key)."""
    try:
        yield
    except PolicyViolation:
        raise
    except (pgerrors.UndefinedTable, pgerrors.InvalidSchemaName) as exc:
        raise SourceNotFoundError(_message(where, exc)) from exc
    except psycopg.Error as exc:
        if _timed_out(exc):
            raise _timeout_error(where) from exc
        if is_transient_database_error(exc):  # the rule the PostgreSQL sink applies too
            raise SourceUnavailableError(_message(where, exc)) from exc
        raise SourceReadError(_message(where, exc)) from exc
    except adbc_driver_manager.Error as exc:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate in _NOT_FOUND_SQLSTATES:
            raise SourceNotFoundError(_message(where, exc)) from exc
        if _timed_out(exc):
            raise _timeout_error(where) from exc
        if is_transient_database_error(exc):
            raise SourceUnavailableError(_message(where, exc)) from exc
        raise SourceReadError(_message(where, exc)) from exc
    except (pa.ArrowInvalid, OSError) as exc:
        # What ADBC raises through pyarrow while it streams rows: no SQLSTATE any more. ArrowInvalid is the
        # server refusing the statement (a write in the read-only transaction, a bad cast): terminal. An
        # OSError is the connection failing mid-stream: transient, the split is read again.
        if _timed_out(exc):
            raise _timeout_error(where) from exc
        if isinstance(exc, pa.ArrowInvalid):
            raise SourceReadError(_message(where, exc)) from exc
        raise SourceUnavailableError(_message(where, exc)) from exc


def _message(where: str, exc: BaseException) -> str:
    # ``scrub``: the values PostgreSQL quotes are described, any connection material it quotes is masked
    return f"{where}: {scrub(str(exc))}".strip()


def _dsn(source: PostgresSource) -> str:
    return postgres_dsn(source)


def _read_only_dsn(dsn: str) -> str:
    """The DSN with the session settings of the policy added to any ``options`` it already has."""
    timeout_ms = int(load_policy().postgres_statement_timeout_s * 1000)
    try:
        given = conninfo_to_dict(dsn).get("options") or ""
    except psycopg.ProgrammingError:
        # Not the parser's message: it may quote the DSN, password included.
        raise ConfigurationError("the source DSN is not a valid PostgreSQL connection string") from None
    options = f"{given} -c default_transaction_read_only=on -c statement_timeout={timeout_ms}".strip()
    return make_conninfo(dsn, options=options)


def _connect(source: PostgresSource, where: str) -> psycopg.Connection[Any]:
    dsn = _read_only_dsn(_dsn(source))
    with _translate_errors(f"{where}: cannot connect"):
        return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


def _relation(source: PostgresSource) -> sql.Composable:
    """The table or the query, checked by the policy here too: the request may not have been validated."""
    if source.table is not None:
        problem = source_table_problem(source.table)
        if problem:
            raise PolicyViolation(f"source table {source.table}: {problem}")
        return sql.Identifier(*source.table.split("."))
    try:
        query = normalize_select(source.query or "")
    except UnsafeQueryError as exc:
        raise PolicyViolation(f"source query: {exc}") from exc
    return sql.SQL("({})").format(sql.SQL(query))


def _select(
    source: PostgresSource, split: Split | None, columns: sql.Composable = _ALL_COLUMNS
) -> sql.Composed:
    """``SELECT <columns> FROM <relation> AS src [WHERE ...] [ORDER BY cursor]`` with inline literals
    (ADBC streams with COPY, which takes no bind parameters)."""
    conditions: list[sql.Composable] = []
    if source.cursor_column and source.cursor_start is not None:
        conditions.append(
            sql.SQL("{} > {}").format(sql.Identifier(source.cursor_column), sql.Literal(source.cursor_start))
        )
    if split is not None and split.kind is SplitKind.KEY_RANGE and source.split_column:
        column = sql.Identifier(source.split_column)
        last = split.index == split.count - 1
        key_range = sql.SQL("({col} >= {lo} AND {col} {op} {hi})").format(
            col=column,
            lo=sql.Literal(int(split.lower or 0)),
            op=sql.SQL("<=" if last else "<"),
            hi=sql.Literal(int(split.upper or 0)),
        )
        if split.index == 0:
            key_range = sql.SQL("({} OR {} IS NULL)").format(key_range, column)
        conditions.append(key_range)
    query = sql.SQL("SELECT {} FROM {} AS src").format(columns, _relation(source))
    if conditions:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(conditions))
    if source.cursor_column:
        query = sql.SQL("{} ORDER BY {}").format(query, sql.Identifier(source.cursor_column))
    return query


def _columns(conn: psycopg.Connection[Any], query: sql.Composed) -> list[tuple[str, int]]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS probe LIMIT 0").format(query))
        return [(d.name, d.type_code) for d in cur.description or []]


def plan(
    source: PostgresSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    where = f"postgres source {source.table or 'query'}"
    with _connect(source, where) as conn, _translate_errors(where):
        base = _select(source, None)
        columns = dict(_columns(conn, base))  # also proves the table or query works
        if not source.split_column or parallelism == 1:
            return whole_split()
        if columns.get(source.split_column) not in _INTEGER_OIDS:
            raise SourceReadError(f"{where}: split_column {source.split_column!r} is not an integer column")
        column = sql.Identifier(source.split_column)
        row = conn.execute(
            sql.SQL("SELECT min({c}), max({c}) FROM ({q}) AS src").format(c=column, q=base)
        ).fetchone()
        low, high = row if row else (None, None)
        if low is None or high is None:
            return whole_split()
        if parallelism is None:
            parallelism = min(MAX_AUTO_SPLITS, _estimated_rows(conn, base) // batch_rows)
    count = max(1, min(parallelism, high - low + 1))
    if count == 1:
        return whole_split()
    bounds = [low + (high - low + 1) * i // count for i in range(count)] + [high]
    ranges = [{"lower": str(lo), "upper": str(hi)} for lo, hi in itertools.pairwise(bounds)]
    return number_splits(ranges, SplitKind.KEY_RANGE)


def _estimated_rows(conn: psycopg.Connection[Any], query: sql.Composed) -> int:
    """The planner's row estimate: free, unlike count(*), and close enough to size splits."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)).fetchone()
    plan_doc = row[0] if row else [{}]
    if isinstance(plan_doc, str):
        plan_doc = json.loads(plan_doc)
    return int(plan_doc[0].get("Plan", {}).get("Plan Rows", 0))


def _select_list(columns: list[tuple[str, int]]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.Identifier(name)
        if oid in _NATIVE_OIDS
        else sql.SQL("{c}::text AS {c}").format(c=sql.Identifier(name))
        for name, oid in columns
    )


def read(
    source: PostgresSource, split: Split, batch_rows: int, *, payload: bytes | None
) -> Iterator[pa.Table]:
    where = f"postgres source {source.table or 'query'} split {split.index}/{split.count}"
    with _connect(source, where) as conn, _translate_errors(where):
        columns = _columns(conn, _select(source, split))
        query = _select(source, split, _select_list(columns)).as_string(conn)
    dsn = _read_only_dsn(_dsn(source))
    with _translate_errors(where), adbc.connect(dsn) as arrow_conn, arrow_conn.cursor() as cur:
        cur.execute(query)
        yield from rebatch(cur.fetch_record_batch(), batch_rows)
