"""Errors of the load service's sinks. Only the base class decides the routing (``shared.errors``): a
``TransientError`` is retried with backoff, anything else is dead-lettered, and the orchestrator's
healing policy knows both by name (a schema mismatch may be healed by rewriting the table)."""

from __future__ import annotations

from shared.errors import DataError, TransientError


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
