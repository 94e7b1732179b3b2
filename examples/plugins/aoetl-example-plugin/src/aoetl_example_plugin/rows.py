"""``example_rows``: ``rows`` rows generated from a ``seed``, the same rows for the same seed every time.

A row is a pure function of its id and the seed, so a split (a range of ids) reads the same rows however
often it is retried and whatever parallelism cut the source: that is what a source must guarantee for the
extract service's retries to be exactly-once downstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
from pydantic import Field

from shared.connectors.base import describe
from shared.contracts import Split, SplitKind
from shared.spec.plugins import PluginSource

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett")
MAX_SPLITS = 64


class ExampleRowsSource(PluginSource):
    type: Literal["example_rows"] = "example_rows"
    rows: int = Field(ge=0, le=10_000_000, description="how many rows to generate")
    seed: int = Field(0, ge=0, description="the same seed gives the same rows")


def row_values(row_id: int, seed: int) -> tuple[str, int]:
    """The ``name`` and ``amount`` of one row (a multiplicative hash: no state, no order dependence)."""
    mixed = (row_id * 2_654_435_761 + seed * 40_503) % 2**32
    return WORDS[mixed % len(WORDS)], mixed % 1000


class _Source:
    """The ``shared.connectors.base.Connector`` of ``example_rows``."""

    model = ExampleRowsSource
    info = describe(
        ExampleRowsSource,
        "generated rows (id, name, amount), deterministic for a seed; for demos and tests",
        (SplitKind.KEY_RANGE,),
    )

    def plan(
        self, source: ExampleRowsSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
    ) -> list[Split]:
        wanted = parallelism or max(1, min(MAX_SPLITS, -(-source.rows // batch_rows)))
        count = max(1, min(wanted, source.rows or 1))
        bounds = [source.rows * i // count for i in range(count + 1)]
        return [
            Split(kind=SplitKind.KEY_RANGE, index=i, count=count, start=bounds[i], end=bounds[i + 1])
            for i in range(count)
        ]

    def read(
        self, source: ExampleRowsSource, split: Split, batch_rows: int, *, payload: bytes | None
    ) -> Iterator[pa.Table]:
        start, end = split.start or 0, split.end if split.end is not None else source.rows
        for first in range(start, end, batch_rows):
            ids = range(first, min(first + batch_rows, end))
            values = [row_values(i, source.seed) for i in ids]
            yield pa.table(
                {
                    "id": pa.array(list(ids), pa.int64()),
                    "name": pa.array([name for name, _ in values], pa.string()),
                    "amount": pa.array([amount for _, amount in values], pa.int64()),
                }
            )


source = _Source()
