"""Cross-batch dedupe keys for the file sinks (local directories and ``s3://`` prefixes alike).

A file destination has no index to ask "was this key written?": the run's parts themselves are the
record. ``RunKeys`` keeps, per run and key columns, the keys of the parts it has read or written, and
before each batch folds in the parts it has not seen yet (``refresh``, given the part names present now:
a directory glob, a bucket listing). So the set is rebuilt after a restart, and a part another replica
wrote since is read in before the next batch is filtered: dedupe is exact whenever the batches of a run
are written one after another, whoever writes them. It is not across two batches of one run written at
the same moment by two replicas (each may let the same new key through once; a file has nothing to lock):
use a database destination when dedupe must hold under concurrent writers.

A key is compared in the form the file stores it, so keys read back from earlier parts equal the same keys
in a new batch: Arrow values rendered as text for Parquet, JSON values for JSONL.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FileFormat = Literal["parquet", "jsonl"]
Keys = tuple[str, ...]
# reads one part of the run (by its name) back: its bytes (a part is one batch, so bounded)
PartReader = Callable[[str], bytes]


class RunKeys:
    """The dedupe keys already in each run's parts, for one sink."""

    def __init__(self, file_format: FileFormat) -> None:
        self._format: FileFormat = file_format
        self._seen: dict[tuple[str, Keys], set[Hashable]] = {}
        self._folded: dict[tuple[str, Keys], set[str]] = {}  # the parts whose keys are in ``_seen``

    def refresh(self, run_id: str, keys: Keys, parts: Iterable[str], read: PartReader) -> None:
        """Fold in the keys of every part of ``parts`` not read yet."""
        seen = self._seen.setdefault((run_id, keys), set())
        folded = self._folded.setdefault((run_id, keys), set())
        for name in sorted(set(parts) - folded):
            seen.update(self.part_keys(read(name), keys))
            folded.add(name)

    def drop_seen(self, run_id: str, keys: Keys, table: pa.Table) -> tuple[pa.Table, set[Hashable]]:
        """The rows of ``table`` whose key is new (its first row of each new key), and those keys."""
        seen = self._seen.get((run_id, keys), set())
        keep: list[bool] = []
        new_keys: set[Hashable] = set()
        for key in self.batch_keys(table.select(list(keys))):
            first = key not in seen and key not in new_keys
            keep.append(first)
            if first:
                new_keys.add(key)
        return table.filter(pa.array(keep, pa.bool_())), new_keys

    def remember(self, run_id: str, keys: Keys, part: str, new_keys: set[Hashable]) -> None:
        """``part`` was written with ``new_keys``: they are seen, and it need not be read back."""
        self._seen.setdefault((run_id, keys), set()).update(new_keys)
        self._folded.setdefault((run_id, keys), set()).add(part)

    def forget(self, run_id: str) -> None:
        for entry in [k for k in self._seen if k[0] == run_id]:
            del self._seen[entry]
            self._folded.pop(entry, None)

    def clear(self) -> None:
        self._seen.clear()
        self._folded.clear()

    def batch_keys(self, keys: pa.Table) -> list[Hashable]:
        if self._format == "parquet":
            as_text = [pc.cast(col, pa.string()).to_pylist() for col in keys.columns]
            return list(zip(*as_text, strict=True))
        buffer = io.BytesIO()
        pl.from_arrow(keys).write_ndjson(buffer)  # type: ignore[union-attr]
        return [_json_key(line, keys.column_names) for line in buffer.getvalue().splitlines() if line.strip()]

    def part_keys(self, data: bytes, keys: Sequence[str]) -> list[Hashable]:
        if self._format == "parquet":
            return self.batch_keys(pq.read_table(io.BytesIO(data), columns=list(keys)))
        return [_json_key(line, keys) for line in data.splitlines() if line.strip()]


def _json_key(line: bytes, keys: Sequence[str]) -> Hashable:
    row = json.loads(line)
    return tuple(json.dumps(row.get(k), sort_keys=True) for k in keys)
