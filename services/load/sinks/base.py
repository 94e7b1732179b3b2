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

from shared.errors import DataError


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


def require_columns(table: pa.Table, columns: Sequence[str], what: str) -> None:
    """Keys that name no column are a spec error, reported before anything is written."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{what} {missing} not in the batch columns {table.column_names}")
