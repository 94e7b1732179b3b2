"""Helpers for sources whose rows arrive as JSON documents (HTTP APIs, event payloads)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from shared.connectors.errors import SourceReadError


def records_at(document: Any, records_path: str | None, *, where: str) -> list[dict[str, Any]]:
    """The records at a dotted path (``data.items``). A single object counts as one record."""
    value = document
    if records_path:
        for key in records_path.split("."):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise SourceReadError(f"{where}: records_path {records_path!r} not found (missing {key!r})")
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise SourceReadError(f"{where}: expected an object or a list of objects at {records_path or 'the root'}")


def dotted_get(document: Any, path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    value = document
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def records_to_tables(
    records: Iterable[dict[str, Any]], batch_rows: int, *, where: str
) -> Iterator[pa.Table]:
    """Group records into tables of at most ``batch_rows`` rows. Types are inferred per batch (JSON has
    no schema), columns are every key any record of the batch has (in order of first appearance; null
    where a record lacks it); columns that are null throughout a batch are typed string rather than
    null."""
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= batch_rows:
            yield _to_table(chunk, where)
            chunk = []
    if chunk:
        yield _to_table(chunk, where)


def _to_table(records: list[dict[str, Any]], where: str) -> pa.Table:
    # pa.array infers one struct type from every record (``Table.from_pylist`` takes the first record's
    # keys and drops a field that only later records have)
    try:
        table = pa.Table.from_struct_array(pa.array(records))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:  # Overflow: past int64
        raise SourceReadError(f"{where}: records do not form a table: {exc}") from exc
    for i, column in enumerate(table.schema):
        if pa.types.is_null(column.type):
            table = table.set_column(i, column.with_type(pa.string()), table.column(i).cast(pa.string()))
    return table
