"""What every destination promises, built in or plugin: each batch is applied exactly once per destination.

A batch is identified by ``batch_id`` ("<task_id>:<seq>"), which is deterministic, so a redelivered
Kafka message carries the same id as the original. Each sink records the id *together with* the rows
(same database transaction, or the same atomically renamed file) and answers a second delivery with
``WriteResult(applied=False)``: that is what makes at-least-once delivery upstream exactly-once here.

The protocols live in ``shared`` (not in the load service that calls them) so that a destination plugin
depends on ``shared`` only: a plugin's entry point in the ``aoetl.destinations`` group is a
:class:`DestinationKind`, whose ``open`` returns a :class:`Sink`. The load service's built-in sinks
implement the same :class:`Sink` (``services.load.sinks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel

from shared.errors import DataError
from shared.settings import KafkaSettings


@dataclass(frozen=True)
class WriteResult:
    applied: bool  # False: the batch had already been applied (duplicate delivery); nothing was written
    # rows_written: on a duplicate, what the first delivery wrote (from the ledger), so totals stay exact
    rows_written: int
    rows_deduplicated: int  # rows dropped because their dedupe key was already seen in this run
    # bytes_written: what the batch put in the destination (a file's size, the produced record values);
    # None when the sink cannot know it. On a duplicate, the first delivery's when the sink still knows it.
    bytes_written: int | None = None


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


@dataclass(frozen=True)
class SinkContext:
    """What the load service hands a destination when it opens a sink: its Kafka settings (security
    included) and the schemas topic, for destinations that write to Kafka."""

    kafka: KafkaSettings | None = None
    schemas_topic: str | None = None


@runtime_checkable
class DestinationKind(Protocol):
    """A destination type: the spec model it validates its section with, a description for the catalog,
    and how to open a sink for a validated section. Sinks are opened once per destination and reused for
    every batch of every run that writes there, then closed; connections should open lazily."""

    @property
    def model(self) -> type[BaseModel]: ...  # read-only: an implementation narrows it

    @property
    def description(self) -> str: ...

    def open(self, destination: Any, context: SinkContext) -> Sink: ...


def require_columns(table: pa.Table, columns: Sequence[str], what: str) -> None:
    """Keys that name no column are a spec error, reported before anything is written."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{what} {missing} not in the batch columns {table.column_names}")
