"""A uniform sample of a whole source, read once with memory bounded by the sample plus one batch.

The profile used to look at the first rows of the first split. On a file sorted by date (most exports
are) that is the first days only: ``suggest`` then proposed ``range`` rules (day 1..12) that the rest of
the file violates, and ``accepted_values`` missing every later category. So the sample is spread over the
whole input: every split is read, and a *bottom-k* sample is kept (each row draws a uniform random key,
the ``rows`` smallest keys are kept), which is a uniform sample without replacement of every row read,
the streaming equivalent of reservoir sampling. Keys come from Arrow's seeded generator
(``pyarrow.compute.random``), so the same input and seed give the same sample (and the same suggested
spec) every time; the kept rows are returned in input order, so a profile reads like the file.

A ``Sample`` says what it is (rows sampled of the total, the method, the seed): the profile keeps that
and suggested specs say it, because a rule drawn from a sample is evidence of that sample only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_SEED = 0
METHOD = "uniform bottom-k (reservoir) sample over the whole input"
_KEY = "__aoetl_sample_key"
_POSITION = "__aoetl_sample_position"


@dataclass(frozen=True)
class Sample:
    table: pa.Table
    total_rows: int  # every row of the input, read to draw the sample
    seed: int = DEFAULT_SEED
    method: str = METHOD


def reservoir_sample(batches: Iterable[pa.Table], rows: int, *, seed: int = DEFAULT_SEED) -> Sample:
    """A uniform sample of at most ``rows`` rows of all ``batches`` together, in their order."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    kept: pa.Table | None = None
    total = 0
    for number, batch in enumerate(batches):
        if batch.num_rows == 0:
            continue
        # one generator seed per batch, derived from the sample's seed: reproducible, independent streams
        keys = pc.random(batch.num_rows, initializer=seed * 1_000_003 + number)
        positions = pa.array(range(total, total + batch.num_rows), pa.int64())
        total += batch.num_rows
        keyed = batch.append_column(_KEY, keys).append_column(_POSITION, positions)
        kept = keyed if kept is None else pa.concat_tables([kept, keyed], promote_options="permissive")
        if kept.num_rows > rows:
            smallest = pc.select_k_unstable(kept, rows, sort_keys=[(_KEY, "ascending")])
            kept = kept.take(smallest)
    if kept is None:
        return Sample(pa.table({}), 0, seed)
    in_order = kept.take(pc.sort_indices(kept, sort_keys=[(_POSITION, "ascending")]))
    return Sample(in_order.drop_columns([_KEY, _POSITION]), total, seed)
