"""Naming a source on the command line or in a tool call, and reading a sample of it (spread over the
whole input: ``shared.agent.sampling``).

A source argument is either a data file path / glob (its type read off the suffix), a JSON/YAML file that
holds a source spec, or an inline JSON/YAML mapping (``{"type": "postgres", "table": "public.orders"}``).
A data path may be an ``s3://`` URL (object or glob): it is read through the same connector as a
pipeline's source (``shared.connectors.object_store``), so it needs a declared ``s3`` connection
(``connection``, the CLI's ``--connection``), checked by the same policy (roots, egress) in the CLI's
process; without one the error names the connections whose roots cover the URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from pydantic import TypeAdapter, ValidationError

from shared.agent.errors import UnprofilableSourceError
from shared.agent.sampling import DEFAULT_SEED, Sample, reservoir_sample
from shared.connectors import plan_splits, read_split
from shared.policy.errors import PolicyViolation
from shared.policy.s3_urls import is_s3
from shared.spec.loader import issues_from_validation
from shared.spec.models import CsvSource, JsonlSource, ParquetSource, Source

SOURCE_ADAPTER: TypeAdapter[Source] = TypeAdapter(Source)
_SUFFIX_TYPES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SPEC_SUFFIXES = {".json", ".yaml", ".yml"}


def data_file_type(path: str) -> str | None:
    """The source type a data file's suffix implies (``orders.csv.gz`` is not supported: None)."""
    return _SUFFIX_TYPES.get(Path(path).suffix.lower())


def s3_connection_hint(url: str) -> str:
    """Why an ``s3://`` source without a connection cannot be read, and which connection would do."""
    from shared.policy.connections import ConnectionKind  # the policy only for object storage
    from shared.policy.s3_urls import confine_s3
    from shared.policy.settings import load_policy

    declared = {n: c for n, c in load_policy().connections.items() if c.kind is ConnectionKind.S3}
    covering = []
    for name, connection in sorted(declared.items()):
        try:
            confine_s3(url, connection.roots, connection=name)
        except PolicyViolation:  # not under this connection's roots (or not a plain URL)
            continue
        covering.append(name)
    if covering:
        fix = f"give --connection {covering[0]}" + (
            f" (connections whose roots cover it: {', '.join(covering)})" if len(covering) > 1 else ""
        )
    elif declared:
        fix = f"no declared s3 connection's roots cover it (s3 connections: {', '.join(sorted(declared))})"
    else:
        fix = "declare an s3 connection in AOETL_POLICY_CONNECTIONS and give --connection NAME"
    return f"{url} is on object storage and needs an s3 connection: {fix}"


def source_from_path(path: str, connection: str | None = None) -> Source:
    kind = data_file_type(path)
    if connection is not None and not is_s3(path):
        raise UnprofilableSourceError(f"--connection is for s3:// paths only, not {path!r}")
    if kind is not None and is_s3(path) and connection is None:
        raise UnprofilableSourceError(s3_connection_hint(path))
    if kind == "csv":
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        return CsvSource(path=path, delimiter=delimiter, connection=connection)
    if kind == "jsonl":
        return JsonlSource(path=path, connection=connection)
    if kind == "parquet":
        return ParquetSource(path=path, connection=connection)
    raise UnprofilableSourceError(
        f"cannot tell the source type of {path!r} from its suffix; known suffixes: "
        f"{', '.join(sorted(_SUFFIX_TYPES))} (or give a source spec as JSON/YAML)"
    )


def parse_source(data: Any) -> Source:
    try:
        return SOURCE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        issues = "; ".join(f"source.{i.path}: {i.reason}" for i in issues_from_validation(exc))
        raise UnprofilableSourceError(f"invalid source spec: {issues}") from exc


def _with_connection(source: Source, connection: str | None) -> Source:
    """A spec'd source with ``connection`` filled in when it names none (a spec's own one wins)."""
    if not isinstance(source, CsvSource | JsonlSource | ParquetSource):
        return source
    if connection is None or not is_s3(source.path) or source.connection is not None:
        return source
    return source.model_copy(update={"connection": connection})


def source_from_argument(argument: str, connection: str | None = None) -> Source:
    """A data path, a source-spec file, or an inline source spec; ``connection`` is the one an ``s3://``
    path (or a spec's s3 source naming none) reads through."""
    text = argument.strip()
    if text.startswith("{"):
        try:
            return _with_connection(parse_source(yaml.safe_load(text)), connection)  # YAML ⊇ JSON
        except yaml.YAMLError as exc:
            raise UnprofilableSourceError(f"inline source spec is not valid JSON/YAML: {exc}") from exc
    path = Path(text)
    if not is_s3(text) and path.suffix.lower() in _SPEC_SUFFIXES and path.is_file():
        try:
            raw = path.read_text(encoding="utf-8")
            data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
        except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise UnprofilableSourceError(f"cannot read source spec {path}: {exc}") from exc
        # A whole pipeline spec is accepted too: its source is what gets profiled.
        if isinstance(data, dict) and "source" in data and "type" not in data:
            data = data["source"]
        return _with_connection(parse_source(data), connection)
    return source_from_path(text, connection)


# rows per batch read while sampling: the memory bound is the sample plus one such batch
SCAN_BATCH_ROWS = 65_536


def sample_source(source: Source, rows: int, *, seed: int = DEFAULT_SEED) -> Sample:
    """A uniform sample of ``rows`` rows of the whole source (every split read once, in order)."""
    if source.type in ("kafka", "event"):
        raise UnprofilableSourceError(
            f"a {source.type} source has no rows before the pipeline runs; profile a file or table instead"
        )
    splits = plan_splits(source, None, batch_rows=max(rows, SCAN_BATCH_ROWS))
    if not splits:
        raise UnprofilableSourceError("the source has no data to sample")

    def every_batch() -> Iterator[pa.Table]:
        for split in splits:
            yield from read_split(source, split, SCAN_BATCH_ROWS)

    try:
        sample = reservoir_sample(every_batch(), rows, seed=seed)
    # splits whose schemas cannot be unified (jsonl files of other shapes)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UnprofilableSourceError(f"the source's files do not share one schema: {exc}") from exc
    if sample.table.num_rows == 0:
        raise UnprofilableSourceError("the source has no rows to sample")
    return sample
