"""Event source: the rows are carried by the request itself (webhook body or triggering event)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from shared.connectors.base import describe, whole_split
from shared.connectors.errors import SourceReadError
from shared.connectors.records import records_at, records_to_tables
from shared.contracts import Split, SplitKind
from shared.spec.models import EventSource

model = EventSource  # the spec section it reads (``Connector.model``)
info = describe(
    EventSource,
    "The records in the triggering request's JSON payload (a list, an object = one record, or a list at "
    "records_path).",
    (SplitKind.EVENT,),
)


def _records(source: EventSource, payload: bytes | None) -> list[dict[str, Any]]:
    if payload is None:
        raise SourceReadError("event source: the request carries no payload")
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise SourceReadError(f"event payload is not valid JSON: {exc}") from exc
    return records_at(document, source.records_path, where="event payload")


def plan(
    source: EventSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    # Validating here rejects a missing or bad payload at planning time, before any task is dispatched.
    _records(source, payload)
    return whole_split(SplitKind.EVENT)


def read(source: EventSource, split: Split, batch_rows: int, *, payload: bytes | None) -> Iterator[pa.Table]:
    yield from records_to_tables(_records(source, payload), batch_rows, where="event payload")
