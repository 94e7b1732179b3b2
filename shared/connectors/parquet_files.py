"""Parquet files: splits are ranges of row groups, planned from the footers alone.

Files are opened only inside the policy's data roots (``paths.open_source``: the descriptor pyarrow reads
is the one that was checked; ``s3://`` objects only through their checked connection); errors are
scrubbed of any value a reader quotes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared.connectors.base import MAX_AUTO_SPLITS, allocate, describe, number_splits, rebatch
from shared.connectors.errors import SourceReadError
from shared.connectors.paths import SourceFile, source_files, split_file
from shared.contracts import Split, SplitKind
from shared.redaction import scrub
from shared.spec.models import ParquetSource

AUTO_SPLIT_BYTES = 64 << 20

model = ParquetSource  # the spec section it reads (``Connector.model``)
info = describe(
    ParquetSource,
    "Parquet files (path, file:// URL, glob, or s3:// URL with a connection). Types come from the "
    "files; all files must share a schema. "
    "Split by row groups.",
    (SplitKind.ROW_GROUPS,),
)


@contextmanager
def _open(path: SourceFile) -> Iterator[pq.ParquetFile]:
    with path.open() as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceReadError(f"{path}: not a readable Parquet file: {scrub(str(exc))}") from exc
        try:
            yield parquet
        finally:
            parquet.close()


def _metadata(path: SourceFile) -> pq.FileMetaData:
    with _open(path) as parquet:
        return parquet.metadata


def plan(
    source: ParquetSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    files = source_files(source.path, source.connection)
    metas = [_metadata(p) for p in files]
    schema = metas[0].schema.to_arrow_schema()
    for path, meta in zip(files[1:], metas[1:], strict=True):
        if not meta.schema.to_arrow_schema().equals(schema):
            raise SourceReadError(f"{path}: schema differs from {files[0]}; all files must share one schema")
    group_counts = [m.num_row_groups for m in metas]
    sizes = [sum(m.row_group(i).total_byte_size for i in range(m.num_row_groups)) for m in metas]
    if parallelism is None:
        wanted = sum(max(1, -(-size // AUTO_SPLIT_BYTES)) for size in sizes)
        parallelism = min(MAX_AUTO_SPLITS, wanted)
    counts = allocate(sizes, max(parallelism, len(files)), caps=[max(1, n) for n in group_counts])
    planned: list[dict[str, Any]] = []
    for path, groups, count in zip(files, group_counts, counts, strict=True):
        bounds = [groups * i // count for i in range(count + 1)]
        planned.extend({"uri": path.uri, "start": lo, "end": hi} for lo, hi in itertools.pairwise(bounds))
    return number_splits(planned, SplitKind.ROW_GROUPS)


def read(
    source: ParquetSource, split: Split, batch_rows: int, *, payload: bytes | None
) -> Iterator[pa.Table]:
    path = split_file(split.uri, source.connection)
    with _open(path) as parquet:
        start = split.start or 0
        end = parquet.num_row_groups if split.end is None else min(split.end, parquet.num_row_groups)
        if start >= end:
            return
        try:
            yield from rebatch(
                parquet.iter_batches(batch_size=batch_rows, row_groups=range(start, end)), batch_rows
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceReadError(f"{path}: row groups [{start}, {end}): {scrub(str(exc))}") from exc
