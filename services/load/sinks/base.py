"""What every destination sink promises: each batch is applied exactly once per destination.

A batch is identified by ``batch_id`` ("<task_id>:<seq>"), which is deterministic, so a redelivered
Kafka message carries the same id as the original. Each sink records the id *together with* the rows
(same database transaction, or the same atomically renamed file) and answers a second delivery with
``WriteResult(applied=False)``: that is what makes at-least-once delivery upstream exactly-once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pyarrow as pa

from shared.errors import DataError, TransientError


@dataclass(frozen=True)
class WriteResult:
    applied: bool  # False: the batch had already been applied (duplicate delivery); nothing was written
    # rows_written: on a duplicate, what the first delivery wrote (from the ledger), so totals stay exact
    rows_written: int
    rows_deduplicated: int  # rows dropped because their dedupe key was already seen in this run


@runtime_checkable
class Sink(Protocol):
    def write(
        self, run_id: str, batch_id: str, table: pa.Table, *, dedupe_keys: Sequence[str] = ()
    ) -> WriteResult:
        """Apply one batch; idempotent by (run_id, batch_id)."""
        ...

    def finalize(self, run_id: str) -> None:
        """End of a successful run (replace mode swaps the staged table in). Idempotent."""
        ...

    def abort(self, run_id: str) -> None:
        """End of a failed run: drop what was staged. Idempotent."""
        ...

    def close(self) -> None: ...


class DestinationUnavailableError(TransientError):
    """The destination cannot be reached right now (connection refused or lost, lock held by another
    writer). Nothing of the batch was committed, so a retry applies it exactly once."""


class IncompatibleSchemaError(DataError):
    """A batch column cannot be stored in the destination column it maps to. Terminal: the data or the
    table must change first."""

    def __init__(self, table: str, column: str, table_type: str, batch_type: str, detail: str = "") -> None:
        self.table = table
        self.column = column
        self.table_type = table_type
        self.batch_type = batch_type
        reason = f"column {column!r} of {table} has type {table_type} but the batch has {batch_type}" + (
            f": {detail}" if detail else ""
        )
        super().__init__(reason)


def require_columns(table: pa.Table, columns: Sequence[str], what: str) -> None:
    """Keys that name no column are a spec error, reported before anything is written."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{what} {missing} not in the batch columns {table.column_names}")
