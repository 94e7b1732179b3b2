"""Naming a source on the command line or in a tool call, and reading a sample of it (spread over the
whole input: ``shared.agent.sampling``).

A source argument is either a data file path / glob (its type read off the suffix), a JSON/YAML file that
holds a source spec, or an inline JSON/YAML mapping (``{"type": "postgres", "table": "public.orders"}``).
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


def source_from_path(path: str) -> Source:
    kind = data_file_type(path)
    if kind == "csv":
        return CsvSource(path=path, delimiter="\t" if path.lower().endswith(".tsv") else ",")
    if kind == "jsonl":
        return JsonlSource(path=path)
    if kind == "parquet":
        return ParquetSource(path=path)
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


def source_from_argument(argument: str) -> Source:
    """A data path, a source-spec file, or an inline source spec."""
    text = argument.strip()
    if text.startswith("{"):
        try:
            return parse_source(yaml.safe_load(text))  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise UnprofilableSourceError(f"inline source spec is not valid JSON/YAML: {exc}") from exc
    path = Path(text)
    if path.suffix.lower() in _SPEC_SUFFIXES and path.is_file():
        try:
            raw = path.read_text(encoding="utf-8")
            data = json.loads(raw) if path.suffix.lower() == ".json" else yaml.safe_load(raw)
        except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise UnprofilableSourceError(f"cannot read source spec {path}: {exc}") from exc
        # A whole pipeline spec is accepted too: its source is what gets profiled.
        if isinstance(data, dict) and "source" in data and "type" not in data:
            data = data["source"]
        return parse_source(data)
    return source_from_path(text)


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
