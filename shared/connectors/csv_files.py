"""CSV files: byte-range splits aligned to line starts, read with pyarrow's streaming CSV reader.

Every column is read as STRING. Type inference would run per split (each reader only sees its own
bytes), so one split could infer int64 and the next float64 or string for the same column, and the load
stage writes all batches of a run into one table. Typing a column is the transform's ``cast`` step job,
where the pipeline author states the type once for the whole run.

Quoted line breaks inside fields make byte-range alignment ambiguous (a ``\\n`` inside quotes is not a
line start). The planner samples the head of each file; if it finds one, that file is read as a single
split with ``newlines_in_values`` on. A quoted line break beyond the sample in a file that was split
surfaces as a ``SourceReadError`` that says to run with ``parallelism: 1``.

The planner checks every file's header (all files of a source must have the same columns). The names read
from a local file are kept in a bounded cache keyed by the file's identity (``paths.FileIdentity``:
device, inode, size, modification and change time, from ``lstat`` of the real path the policy just
resolved and confined for this very request), so many runs of one file open it once: any write to the
file or a replacement changes the key. Only what is read from the bytes is cached; the path is still
resolved and checked against the policy on every plan, and the extract service opens and checks the file
for every split it reads.

Files are opened only inside the policy's data roots (``paths.open_source``; ``s3://`` objects only
through their checked connection, ``object_store``), and a read error names the
file, the line and what is wrong with it, never the line's content (``shared.redaction``).
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from shared.connectors.base import describe, number_splits, rebatch
from shared.connectors.errors import SourceReadError
from shared.connectors.lines import RangeReader, count_newlines, next_line_start, plan_byte_ranges
from shared.connectors.paths import FileIdentity, SourceFile, source_files, split_file
from shared.contracts import Split, SplitKind
from shared.redaction import describe_text, scrub
from shared.spec.models import CsvSource

SAMPLE_BYTES = 1 << 20
BLOCK_BYTES = 1 << 20
MAX_HEADER_BYTES = 1 << 20
HEADER_CACHE_FILES = 1024
RACY_NS = 2_000_000_000  # see ``header_names``: more than any tick of the clock that stamps file times
HEADER_CACHE_MAX_CHARS = 4096  # a longer header is read every time: the cache's memory stays ~4 MiB at most

model = CsvSource  # the spec section it reads (``Connector.model``)
info = describe(
    CsvSource,
    "Delimited text files (path, file:// URL, glob, or s3:// URL with a connection). All columns are "
    "read as strings; use a 'cast' transform to type them. Files are split into byte ranges aligned to "
    "line starts.",
    (SplitKind.BYTE_RANGE,),
)


def _first_line(f: BinaryIO, size: int) -> tuple[bytes, int]:
    """The first line's bytes (with its line break) and the offset where the next line starts."""
    f.seek(0)
    head = f.read(min(size, MAX_HEADER_BYTES))
    end = next_line_start(f, 1, size) if size else 0
    return head[:end], end


def _column_names(path: SourceFile, f: BinaryIO, size: int, source: CsvSource) -> tuple[list[str], int]:
    """Column names (the header, or ``f0..fN`` without one) and the offset where data starts."""
    line, header_end = _first_line(f, size)
    if not line.strip():
        return [], header_end
    if not line.endswith(b"\n"):
        line += b"\n"  # a header-only file without a final line break is still a header
    # The csv module, not pyarrow.csv: one line through pyarrow's reader took ~3 ms in a busy orchestrator
    # (it plans every run of a CSV source through here), the csv module a few microseconds, with the
    # same quoting rules (double-quote quoting, doubled quotes inside).
    try:
        text = line.decode("utf-8").rstrip("\r\n")
        fields = next(csv.reader([text], delimiter=source.delimiter, strict=True), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceReadError(f"{path}: line 1: cannot parse the first line: {scrub(str(exc))}") from exc
    if not source.has_header:
        return [f"f{i}" for i in range(len(fields))], 0
    return fields, header_end


class _HeaderCache:
    """Column names by (file identity, delimiter, has_header), least recently used first out."""

    def __init__(self, files: int = HEADER_CACHE_FILES):
        self._files = files
        self._names: OrderedDict[tuple[FileIdentity, str, bool], tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()  # the planner may run on several threads (the gateway, the CLI)

    def get(self, key: tuple[FileIdentity, str, bool]) -> list[str] | None:
        with self._lock:
            names = self._names.get(key)
            if names is not None:
                self._names.move_to_end(key)
        return None if names is None else list(names)

    def put(self, key: tuple[FileIdentity, str, bool], names: list[str]) -> None:
        if sum(map(len, names)) > HEADER_CACHE_MAX_CHARS:
            return
        with self._lock:
            self._names[key] = tuple(names)
            self._names.move_to_end(key)
            while len(self._names) > self._files:
                self._names.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._names.clear()


_HEADERS = _HeaderCache()


def _now_ns() -> int:
    return time.time_ns()  # the wall clock, as the file times are (a function: tests give their own)


def header_names(path: SourceFile, size: int, source: CsvSource) -> list[str]:
    """The file's column names (``_column_names``), from the cache when the file is unchanged since they
    were read (see the module docstring); a file without an identity (an object) is read every time.

    Names are cached only for a file last changed ``RACY_NS`` before its identity was taken. The file's
    times are the kernel's coarse clock: two writes of the same size within one tick can leave all of the
    identity as it was, so a file changed just now could change again unseen; one unchanged for longer
    gets a later change time from any change, hence a new key, even one between the ``lstat`` and the
    read (the names read then are under a key that no later plan sees again)."""
    identity = path.identity()
    now = _now_ns()
    key = None if identity is None else (identity, source.delimiter, source.has_header)
    if key is not None:
        cached = _HEADERS.get(key)
        if cached is not None:
            return cached
    with path.open() as f:
        names, _ = _column_names(path, f, size, source)
    if key is not None and identity is not None and now - max(identity[3], identity[4]) > RACY_NS:
        _HEADERS.put(key, names)
    return names


def has_quoted_newlines(path: SourceFile, delimiter: str) -> bool:
    """Whether a quoted field in the head of the file contains a line break."""
    with path.open() as f:
        sample = f.read(SAMPLE_BYTES)
    if b'"' not in sample:
        return False
    text = sample.decode("utf-8", errors="replace")
    try:
        return any(
            "\n" in field or "\r" in field
            for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
            for field in row
        )
    except csv.Error:
        return True  # cannot tell: a single split is always correct


def plan(
    source: CsvSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    files = source_files(source.path, source.connection)
    sizes = [p.size for p in files]
    if source.has_header:  # a header that does not parse fails the run here, before any task
        _check_same_header(files, sizes, source)
    ranges = _byte_ranges(files, sizes, parallelism, source.delimiter)
    planned: list[dict[str, Any]] = [
        {"uri": path.uri, "start": start, "end": end}
        for path, file_ranges in zip(files, ranges, strict=True)
        for start, end in file_ranges
    ]
    return number_splits(planned, SplitKind.BYTE_RANGE)


def _byte_ranges(
    files: list[SourceFile], sizes: list[int], parallelism: int | None, delimiter: str
) -> list[list[tuple[int, int]]]:
    """The ranges per file, a file cut only if its head has no quoted line break. Only the files the plan
    would cut are sampled (again after a sample took a file out, as the others may then get its splits):
    a file read whole is read with ``newlines_in_values`` anyway, and a small run's planning then opens its
    file once (for the header), not twice (the orchestrator plans every run)."""
    splittable = [True] * len(files)
    sampled: set[int] = set()
    while True:
        ranges = plan_byte_ranges(sizes, parallelism, splittable)
        cut = [i for i, file_ranges in enumerate(ranges) if len(file_ranges) > 1 and i not in sampled]
        if not cut:
            return ranges
        for i in cut:
            sampled.add(i)
            splittable[i] = not has_quoted_newlines(files[i], delimiter)


def _check_same_header(files: list[SourceFile], sizes: list[int], source: CsvSource) -> None:
    """All files of one source must share the header, or batches of one run would disagree on columns."""
    first: tuple[SourceFile, list[str]] | None = None
    for path, size in zip(files, sizes, strict=True):
        if not size:
            continue
        names = header_names(path, size, source)
        if first is None:
            first = (path, names)
        elif names != first[1]:
            raise SourceReadError(
                f"{path}: header {names} differs from {first[1]} in {first[0]}; "
                "all files of one source must have the same columns"
            )


def read(source: CsvSource, split: Split, batch_rows: int, *, payload: bytes | None) -> Iterator[pa.Table]:
    path = split_file(split.uri, source.connection)
    with path.open() as f:
        size = path.size
        names, data_start = _column_names(path, f, size, source)
        start = next_line_start(f, max(split.start or 0, data_start), size)
        end = next_line_start(f, size if split.end is None else split.end, size)
    if not names or start >= end:
        return
    whole_file = start == data_start and end == size
    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    stream = RangeReader(path, start, end)
    try:
        reader = pacsv.open_csv(
            stream,
            # Single-threaded so rejected rows carry their row number (and the extract service already
            # runs one split per worker).
            read_options=pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=source.delimiter,
                newlines_in_values=whole_file,
                invalid_row_handler=on_invalid_row,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                null_values=source.null_values,
                strings_can_be_null=True,
                # A quoted "" is an explicit value, not a missing one.
                quoted_strings_can_be_null=False,
            ),
        )
        yield from rebatch(reader, batch_rows)
    except pa.ArrowInvalid as exc:
        raise _read_error(path, start, whole_file, bad_rows, exc) from exc
    finally:
        stream.close()


def _read_error(
    path: SourceFile, start: int, whole_file: bool, bad_rows: list[pacsv.InvalidRow], exc: Exception
) -> SourceReadError:
    if not bad_rows:
        return SourceReadError(f"{path}: bytes from offset {start}: {scrub(str(exc))}")
    row = bad_rows[0]
    with path.open() as f:
        line = count_newlines(f, start) + (row.number if row.number and row.number > 0 else 1)
    hint = "" if whole_file else " (if fields contain quoted line breaks, run with parallelism 1)"
    return SourceReadError(
        f"{path}: line {line}: expected {row.expected_columns} columns, got {row.actual_columns} "
        f"(the line: {describe_text(row.text or '')}){hint}"
    )
