"""Byte ranges of line-oriented files (CSV, JSON Lines).

Ownership rule: a split ``[start, end)`` owns exactly the lines that *start* inside it. A line starts at
offset 0 and right after every ``\\n`` (so ``\\r\\n`` files work unchanged). Because the rule is evaluated
against the file's bytes, the planner can cut ranges blindly from the file size alone and adjacent
readers still agree on the boundary line: no line is lost or read twice.
"""

from __future__ import annotations

import io
import itertools
from typing import BinaryIO

from shared.connectors.base import MAX_AUTO_SPLITS, allocate
from shared.connectors.paths import SourceFile

SCAN_CHUNK = 1 << 20
# A split is one extract task and one Kafka transaction: downstream stages see its batches only when it
# commits. ~8 MiB keeps that first-batch delay short (stages overlap) while a task still amortises its
# transaction; measured on 1M rows x 10 columns, 54 MiB: 64 MiB splits serialised the stages, and 8 MiB
# against 16 MiB let load start ~0.3 s sooner and cut the run from 2.6-2.9 s to 1.8-2.0 s (4 MiB: the same
# as 8; bench_peers on 2 cores).
AUTO_SPLIT_BYTES = 8 << 20
# An automatic plan that cuts the first file also gives it a small lead split first: the first rows then
# reach transform and load after ~1 MiB is read instead of ~8, so load opens its connection and creates the
# table while extract reads on, and the stages overlap from the run's start (load is the critical path).
LEAD_SPLIT_BYTES = 1 << 20


def next_line_start(f: BinaryIO, offset: int, size: int) -> int:
    """The first line start at or after ``offset`` (``size`` when none is left)."""
    if offset <= 0:
        return 0
    if offset >= size:
        return size
    pos = offset - 1  # if byte offset-1 is '\n', a line starts exactly at offset
    f.seek(pos)
    while pos < size:
        chunk = f.read(SCAN_CHUNK)
        if not chunk:
            break
        hit = chunk.find(b"\n")
        if hit >= 0:
            return pos + hit + 1
        pos += len(chunk)
    return size


def count_newlines(f: BinaryIO, end: int) -> int:
    """Newlines in ``[0, end)``: the line number of the line starting at ``end``, minus one. Only used to
    put an absolute line number in an error message, so its full scan is off the hot path."""
    f.seek(0)
    count, pos = 0, 0
    while pos < end:
        chunk = f.read(min(SCAN_CHUNK, end - pos))
        if not chunk:
            break
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


class RangeReader(io.RawIOBase):
    """A read-only stream over ``[start, end)`` of a file, so a streaming parser stops at the split end
    while reading the file in its own block size (memory stays bounded by that block size). A local file
    is opened only inside the policy's data roots, an object only through its checked connection."""

    def __init__(self, file: SourceFile, start: int, end: int) -> None:
        super().__init__()
        self._file = file.open()
        self._file.seek(start)
        self._remaining = max(0, end - start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer).cast("B")[: self._remaining]
        n = self._file.readinto(view)
        self._remaining -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def plan_byte_ranges(
    sizes: list[int], parallelism: int | None, splittable: list[bool] | None = None
) -> list[list[tuple[int, int]]]:
    """Per file, the ``[start, end)`` ranges to read. A split never spans files, so there are at least
    as many splits as files; ``parallelism=None`` means one split per ~8 MiB (at most 64 in total), the
    first file's first one cut in two, ``LEAD_SPLIT_BYTES`` and the rest, when that file is cut at all.
    Files marked not ``splittable`` get exactly one range covering the whole file."""
    auto = parallelism is None
    can_split = splittable or [True] * len(sizes)
    caps = [max(1, size) if ok else 1 for size, ok in zip(sizes, can_split, strict=True)]
    if parallelism is None:
        wanted = sum(
            min(cap, max(1, -(-size // AUTO_SPLIT_BYTES))) for size, cap in zip(sizes, caps, strict=True)
        )
        parallelism = min(MAX_AUTO_SPLITS, wanted)
    counts = allocate(sizes, max(parallelism, len(sizes)), caps=caps)
    plans: list[list[tuple[int, int]]] = []
    for size, count in zip(sizes, counts, strict=True):
        bounds = [size * i // count for i in range(count + 1)]
        plans.append(list(itertools.pairwise(bounds)))
    if auto and plans and len(plans[0]) > 1 and sum(map(len, plans)) < MAX_AUTO_SPLITS:
        (start, end), *rest = plans[0]
        if end - start > 2 * LEAD_SPLIT_BYTES:
            plans[0] = [(start, start + LEAD_SPLIT_BYTES), (start + LEAD_SPLIT_BYTES, end), *rest]
    return plans
