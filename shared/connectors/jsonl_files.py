"""JSON Lines files: byte-range splits aligned to line starts, read with pyarrow's streaming JSON reader.

JSON strings cannot hold a raw line break, so byte-range alignment is always safe here.

One schema per run: each split reader infers the schema from the same sample (the head of the first
file of the sorted glob) and passes it to pyarrow as an explicit schema. Inferring per split would let one
split see a column as int64 and another as double or null, and all batches of a run are loaded into one
table. A value or field that does not fit the sampled schema is a ``SourceReadError`` naming the line and
what is wrong with it, never the line's content (``shared.redaction``). Files are opened only
inside the policy's data roots (``paths.open_source``; ``s3://`` objects only through their checked
connection, ``object_store``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from shared.connectors.base import describe, number_splits, rebatch
from shared.connectors.errors import SourceReadError
from shared.connectors.lines import RangeReader, count_newlines, next_line_start, plan_byte_ranges
from shared.connectors.paths import SourceFile, source_files, split_file
from shared.contracts import Split, SplitKind
from shared.redaction import describe_text, scrub
from shared.spec.models import JsonlSource

SAMPLE_BYTES = 1 << 20
BLOCK_BYTES = 1 << 20

model = JsonlSource  # the spec section it reads (``Connector.model``)
info = describe(
    JsonlSource,
    "JSON Lines files (path, file:// URL, glob, or s3:// URL with a connection), one object per line. "
    "Column types are inferred from the first 1 MiB of the first file and kept for the whole run.",
    (SplitKind.BYTE_RANGE,),
)


def plan(
    source: JsonlSource, parallelism: int | None, *, payload: bytes | None, batch_rows: int
) -> list[Split]:
    files = source_files(source.path, source.connection)
    ranges = plan_byte_ranges([p.size for p in files], parallelism)
    planned: list[dict[str, Any]] = [
        {"uri": path.uri, "start": start, "end": end}
        for path, file_ranges in zip(files, ranges, strict=True)
        for start, end in file_ranges
    ]
    return number_splits(planned, SplitKind.BYTE_RANGE)


def sample_schema(source: JsonlSource) -> pa.Schema | None:
    """The run's schema, from whole lines in the head of the first non-empty file (None: no data)."""
    for path in source_files(source.path, source.connection):
        with path.open() as f:
            sample = f.read(SAMPLE_BYTES)
        if len(sample) == SAMPLE_BYTES:
            sample = sample[: sample.rfind(b"\n") + 1]
        if not sample.strip():
            continue
        try:
            schema = pajson.read_json(io.BytesIO(sample)).schema
        except pa.ArrowInvalid as exc:
            raise _read_error(path, 0, len(sample), exc) from exc
        # A column that is null throughout the sample has no type yet; string is the widest guess.
        return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema])
    return None


def read(source: JsonlSource, split: Split, batch_rows: int, *, payload: bytes | None) -> Iterator[pa.Table]:
    path = split_file(split.uri, source.connection)
    with path.open() as f:
        size = path.size
        start = next_line_start(f, split.start or 0, size)
        end = next_line_start(f, size if split.end is None else split.end, size)
    if start >= end:
        return
    schema = sample_schema(source)
    if schema is None:
        return
    stream = RangeReader(path, start, end)
    try:
        reader = pajson.open_json(
            stream,
            read_options=pajson.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        )
        yield from rebatch(reader, batch_rows)
    except pa.ArrowInvalid as exc:
        raise _read_error(path, start, end, exc, schema) from exc
    finally:
        stream.close()


def _read_error(
    path: SourceFile, start: int, end: int, exc: Exception, schema: pa.Schema | None = None
) -> SourceReadError:
    """Find the offending line (error path only: re-scans the split line by line) for a precise message."""
    with path.open() as f:
        first_line = count_newlines(f, start) + 1
        f.seek(start)
        pos, number = start, first_line
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            problem = _line_problem(raw, schema)
            if problem:
                line = describe_text(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                return SourceReadError(f"{path}: line {number}: {problem} (the line: {line})")
            number += 1
    return SourceReadError(f"{path}: bytes [{start}, {end}): {scrub(str(exc))}")


def _line_problem(raw: bytes, schema: pa.Schema | None) -> str | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return f"invalid JSON ({scrub(str(exc))})"
    if not isinstance(value, dict):
        return "not a JSON object"
    if schema is None:
        return None
    unknown = sorted(set(value) - set(schema.names))
    if unknown:
        return f"fields {unknown} are not in the schema sampled from the first file"
    try:
        pajson.read_json(io.BytesIO(raw), parse_options=pajson.ParseOptions(explicit_schema=schema))
    except pa.ArrowInvalid as exc:
        return f"does not fit the schema sampled from the first file ({scrub(str(exc))})"
    return None
