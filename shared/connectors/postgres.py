"""PostgreSQL tables and queries, streamed as ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``.

Why COPY + pyarrow's CSV parser: the server streams rows as fast as it can produce them, and pyarrow parses
them in C++ into typed columns, block by block, so memory stays bounded by the block size and no Python
object is created per value. Column types come from the result description (type OIDs) and are passed to
the parser explicitly. Measured on 1M rows x 6 columns (int8, text, float8, bool, date, timestamptz) on
the dev box: this path ~1.0 s vs ADBC (``adbc-driver-postgresql`` 1.13) ~0.8 s; the gap is too small to
justify a second native driver dependency, and psycopg is already used by the load stage.

Splits: with ``split_column`` (an integer column), ``lower <= c < upper`` key ranges from a min/max query
at planning time; the last range is inclusive of the max, and the first one also takes rows whose
``split_column`` is NULL, so the ranges together cover every row exactly once.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import errors as pgerrors
from psycopg import sql

from shared.connectors.base import describe, number_splits, rebatch, whole_split
from shared.connectors.errors import SourceNotFoundError, SourceReadError, SourceUnavailableError
from shared.contracts import Split, SplitKind
from shared.errors import ConfigurationError
from shared.spec.models import PostgresSource

MAX_AUTO_SPLITS = 8
BLOCK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 10

info = describe(
    PostgresSource,
    "A PostgreSQL table or SELECT query. Incremental with cursor_column/cursor_start; split into integer "
    "key ranges with split_column. Types are preserved (numeric and unknown types become strings).",
    (SplitKind.WHOLE, SplitKind.KEY_RANGE),
)

# Text forms in COPY output are parsed into these types; everything else (numeric, json, uuid, arrays,
# intervals...) stays a string so no precision or structure is silently lost.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),  # oid
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),  # the session runs with TimeZone=UTC
}
_INTEGER_OIDS = frozenset({20, 21, 23})


@contextmanager
def _translate_errors(where: str) -> Iterator[None]:
    try:
        yield
    except pgerrors.UndefinedTable as exc:
        raise SourceNotFoundError(f"{where}: {exc}".strip()) from exc
    except psycopg.OperationalError as exc:
        raise SourceUnavailableError(f"{where}: {exc}".strip()) from exc
    except psycopg.Error as exc:
        raise SourceReadError(f"{where}: {exc}".strip()) from exc


def _connect(source: PostgresSource) -> psycopg.Connection[Any]:
    dsn = os.environ.get(source.dsn_env)
    if not dsn:
        raise ConfigurationError(f"environment variable {source.dsn_env} (the source DSN) is not set")
    with _translate_errors("postgres source: cannot connect"):
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        # Fixed output formats make COPY's text parseable the same way on every server.
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
    return conn


def _relation(source: PostgresSource) -> sql.Composable:
    if source.table is not None:
        return sql.Identifier(*source.table.split("."))
    query = (source.query or "").strip().rstrip(";")
    return sql.SQL("({})").format(sql.SQL(query))  # the spec validated it is a SELECT


def _select(source: PostgresSource, split: Split | None) -> tuple[sql.Composed, list[Any]]:
    """``SELECT * FROM <relation> AS src [WHERE ...] [ORDER BY cursor]`` and its parameters."""
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if source.cursor_column and source.cursor_start is not None:
        conditions.append(sql.SQL("{} > %s").format(sql.Identifier(source.cursor_column)))
        params.append(source.cursor_start)
    if split is not None and split.kind is SplitKind.KEY_RANGE and source.split_column:
        column = sql.Identifier(source.split_column)
        last = split.index == split.count - 1
        key_range = sql.SQL("({col} >= %s AND {col} {op} %s)").format(
            col=column, op=sql.SQL("<=" if last else "<")
        )
        if split.index == 0:
            key_range = sql.SQL("({} OR {} IS NULL)").format(key_range, column)
        conditions.append(key_range)
        params.extend([int(split.lower or 0), int(split.upper or 0)])
    query = sql.SQL("SELECT * FROM {} AS src").format(_relation(source))
    if conditions:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(conditions))
    if source.cursor_column:
        query = sql.SQL("{} ORDER BY {}").format(query, sql.Identifier(source.cursor_column))
    return query, params


def _columns(conn: psycopg.Connection[Any], query: sql.Composed, params: list[Any]) -> list[tuple[str, int]]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS probe LIMIT 0").format(query), params)
        return [(d.name, d.type_code) for d in cur.description or []]


def plan(
    source: PostgresSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    where = f"postgres source {source.table or 'query'}"
    with _connect(source) as conn, _translate_errors(where):
        base, params = _select(source, None)
        columns = dict(_columns(conn, base, params))  # also proves the table and query exist
        if not source.split_column or parallelism == 1:
            return whole_split()
        if columns.get(source.split_column) not in _INTEGER_OIDS:
            raise SourceReadError(f"{where}: split_column {source.split_column!r} is not an integer column")
        column = sql.Identifier(source.split_column)
        row = conn.execute(
            sql.SQL("SELECT min({c}), max({c}) FROM ({q}) AS src").format(c=column, q=base), params
        ).fetchone()
        low, high = (row or (None, None))[:2]
        if low is None or high is None:
            return whole_split()
        if parallelism is None:
            parallelism = min(MAX_AUTO_SPLITS, _estimated_rows(conn, base, params) // batch_rows)
    count = max(1, min(parallelism, high - low + 1))
    if count == 1:
        return whole_split()
    bounds = [low + (high - low + 1) * i // count for i in range(count)] + [high]
    ranges = [{"lower": str(lo), "upper": str(hi)} for lo, hi in itertools.pairwise(bounds)]
    return number_splits(ranges, SplitKind.KEY_RANGE)


def _estimated_rows(conn: psycopg.Connection[Any], query: sql.Composed, params: list[Any]) -> int:
    """The planner's row estimate: free, unlike count(*), and close enough to size splits."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params).fetchone()
    plan_doc = row[0] if row else [{}]
    if isinstance(plan_doc, str):
        plan_doc = json.loads(plan_doc)
    return int(plan_doc[0].get("Plan", {}).get("Plan Rows", 0))


class _CopyStream(io.RawIOBase):
    """Adapts psycopg's COPY chunk iterator to the file interface pyarrow's CSV reader consumes."""

    def __init__(self, chunks: Iterator[bytes | bytearray | memoryview]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk).cast("B")
        n = min(len(buffer), len(self._pending))
        memoryview(buffer).cast("B")[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def read(
    source: PostgresSource, split: Split, batch_rows: int, *, payload: bytes | None
) -> Iterator[pa.Table]:
    where = f"postgres source {source.table or 'query'} split {split.index}/{split.count}"
    with _connect(source) as conn, _translate_errors(where):
        query, params = _select(source, split)
        columns = _columns(conn, query, params)
        names = [name for name, _ in columns]
        types = {name: _ARROW_TYPES.get(oid, pa.string()) for name, oid in columns}
        with conn.cursor() as cur:
            # COPY cannot take server-side parameters; psycopg binds them client-side as literals.
            copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)
            with cur.copy(copy_sql, params) as copy:
                try:
                    reader = pacsv.open_csv(
                        _CopyStream(iter(copy)),
                        read_options=pacsv.ReadOptions(
                            column_names=names, block_size=BLOCK_BYTES, use_threads=False
                        ),
                        parse_options=pacsv.ParseOptions(newlines_in_values=True),
                        convert_options=pacsv.ConvertOptions(
                            column_types=types,
                            true_values=["t"],
                            false_values=["f"],
                            null_values=[""],
                            strings_can_be_null=True,
                            quoted_strings_can_be_null=False,  # COPY writes '' for an empty string
                        ),
                    )
                    yield from rebatch(reader, batch_rows)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SourceReadError(f"{where}: cannot convert COPY output: {exc}") from exc
