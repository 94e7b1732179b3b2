"""From a profile to a ready ``PipelineSpec``, by fixed heuristics, proven on the sample by a dry run.

The heuristics (each one explained in the suggestion's notes):

* NA markers (``N/A``, ``-``, ``None``...) become nulls: in the CSV source's ``null_values``, or for other
  sources with a ``derive`` per column (``CASE WHEN trim(x) IN (...) THEN NULL ...``);
* a ``cast`` for every typed text column, with ``formats`` for non-ISO dates and timestamps; a column whose
  dates mix formats gets a ``derive`` that tries each format in turn instead (one cast has one format);
* PII is masked (emails hashed so joins still work, phone and card numbers keep their last 4 characters);
* ``dedupe`` on a key-like column that has repeated values (or on all columns for repeated rows);
* quality: ``not_null`` on the key with quarantine; ``accepted_values`` for low-cardinality text and
  ``range`` from observed min/max, both ``warn`` since a sample cannot know every legitimate value (the
  sample is spread over the whole input, ``shared.agent.sampling``, and the spec's ``description`` says
  which sample the rules come from);
* ISO-8601 timestamps with a zone are cast with the ``%+`` format, which keeps them zoned (UTC): they
  land as ``timestamptz``;
* a table destination merges on the key when there is one, so a re-run does not duplicate rows.

The spec is then checked by ``parse_spec`` and dry-run (``TransformEngine`` + ``QualityChecker``) on the
sample rows only. A cast that the dry run refutes is dropped (the column stays text) and noted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel

from shared.agent.errors import SuggestionError
from shared.agent.pii import PiiKind
from shared.agent.profile import ColumnProfile, SourceProfile
from shared.policy.s3_urls import is_s3
from shared.spec import parse_spec
from shared.spec.models import (
    CastStep,
    CsvSource,
    DataType,
    DedupeStep,
    DeriveStep,
    Destination,
    DuckDBDestination,
    JsonlDestination,
    KafkaDestination,
    MaskMethod,
    MaskStep,
    ParquetDestination,
    PipelineSpec,
    PostgresDestination,
    Source,
    TransformStep,
    WriteMode,
)
from shared.spec.quality import AcceptedValuesRule, NotNullRule, OnFail, QualityRule, RangeRule
from shared.sql import quote_ident
from shared.transform.engine import TransformEngine
from shared.transform.errors import CastError, ExpressionError
from shared.transform.quality import QualityChecker

ACCEPTED_VALUES_MAX = 10
DEFAULT_OUTPUT_DIR = "aoetl-output"  # where a spec drafted without a destination writes (Parquet)
_MASKS = {
    PiiKind.EMAIL: MaskMethod.HASH,
    PiiKind.PHONE: MaskMethod.PARTIAL,
    PiiKind.CARD_NUMBER: MaskMethod.PARTIAL,
}


@dataclass(frozen=True)
class DryRunReport:
    rows_in: int
    rows_out: int
    rows_quarantined: int
    output_columns: list[str]
    violations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Suggestion:
    spec: PipelineSpec
    notes: list[str]
    dry_run: DryRunReport


# -------------------------------------------------------------------------------------- destinations
def parse_destination_uri(uri: str, *, connection: str | None = None) -> Destination:
    """A destination from ``postgres://[schema.]table``, ``duckdb:PATH#table``, ``parquet:DIR``,
    ``jsonl:DIR`` or ``kafka:TOPIC``; a parquet or jsonl ``DIR`` that is an ``s3://`` prefix writes
    through ``connection`` (an s3 connection; given for another destination, it is ignored)."""
    scheme, sep, rest = uri.partition(":")
    on_s3 = is_s3(rest)
    if on_s3 and connection is None:
        raise SuggestionError(f"destination {uri!r} is on object storage: give its s3 connection")
    scheme = scheme.lower()
    if not sep or not rest:
        raise SuggestionError(f"destination {uri!r}: expected SCHEME:TARGET, e.g. postgres://orders")
    try:
        if scheme in ("postgres", "postgresql"):
            return PostgresDestination(table=rest.removeprefix("//"))
        if scheme == "duckdb":
            path, hash_sign, table = rest.rpartition("#")
            if not hash_sign or not path or not table:
                raise SuggestionError(f"destination {uri!r}: expected duckdb:PATH#table")
            return DuckDBDestination(path=path, table=table)
        if scheme == "parquet":
            return ParquetDestination(path=rest, connection=connection if on_s3 else None)
        if scheme == "jsonl":
            return JsonlDestination(path=rest, connection=connection if on_s3 else None)
        if scheme == "kafka":
            return KafkaDestination(topic=rest.removeprefix("//"))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise SuggestionError(f"destination {uri!r}: {exc}") from exc
    raise SuggestionError(
        f"destination {uri!r}: unknown scheme {scheme!r}; use postgres, duckdb, parquet, jsonl or kafka"
    )


def pipeline_name_for(source: dict[str, Any]) -> str:
    """A valid pipeline name from the source (file stem or table name)."""
    if isinstance(source.get("path"), str):
        raw = source["path"].split("*")[0].rstrip("/") or source["path"]
        stem = Path(raw).stem
    else:  # a table name: the part after the schema
        stem = str(source.get("table") or source.get("topic") or source.get("type") or "").split(".")[-1]
    name = re.sub(r"[^a-z0-9_\-]+", "_", stem.lower()).strip("_-") or "pipeline"
    if not name[0].isalpha():
        name = f"p_{name}"
    return name[:63]


# -------------------------------------------------------------------------------------------- dry run
def apply_source_nulls(sample: pa.Table, source: Source) -> pa.Table:
    """The sample as the source would now read it: a CSV's ``null_values`` that were added after the sample
    was taken are applied in memory (exact match, like the reader), so the dry run needs no new I/O."""
    if not isinstance(source, CsvSource) or not source.null_values:
        return sample
    markers = pa.array(source.null_values, pa.string())
    for index, column in enumerate(sample.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            hit = pc.is_in(column, value_set=markers.cast(column.type))
            sample = sample.set_column(
                index, sample.field(index), pc.if_else(hit, pa.scalar(None, column.type), column)
            )
    return sample


def dry_run(spec: PipelineSpec, sample: pa.Table) -> DryRunReport:
    """Run the spec's transforms and row rules on the sample; the engine's errors propagate as raised."""
    table = apply_source_nulls(sample, spec.source)
    with TransformEngine(spec.transforms) as engine:
        out = engine.apply(table)
    outcome = QualityChecker(spec.quality).check(out)
    return DryRunReport(
        rows_in=sample.num_rows,
        rows_out=outcome.kept.num_rows,
        rows_quarantined=sum(rows.num_rows for _, rows in outcome.quarantined),
        output_columns=out.column_names,
        violations=[f"{v.rule} ({v.on_fail.value}): {v.reason}" for v in outcome.violations],
    )


# ----------------------------------------------------------------------------------------- suggest
def suggest_spec(profile: SourceProfile, destination: Destination, *, name: str | None = None) -> Suggestion:
    if not profile.columns:
        raise SuggestionError("the profile has no columns")
    source = parse_spec(
        {"name": "x", "source": profile.source, "destination": {"type": "jsonl", "path": "x"}}
    ).source
    demoted: set[str] = set()
    notes: list[str] = []
    for _ in range(len(profile.columns) + 1):
        spec, notes = _build(profile, source, destination, name or pipeline_name_for(profile.source), demoted)
        try:
            report = dry_run(spec, profile.sample)
        except (CastError, ExpressionError) as exc:
            column = getattr(exc, "column", None) or _mixed_column(exc, profile)
            if column is None or column in demoted:
                raise SuggestionError(f"the suggested spec fails on the sample: {exc}") from exc
            demoted.add(column)
            continue
        notes += [f"column {c!r} kept as text: the sample refuted its inferred type" for c in sorted(demoted)]
        # A final round trip proves the spec is exactly what a user or the orchestrator will load.
        return Suggestion(parse_spec(compact_dump(spec)), notes, report)
    raise SuggestionError("no castable spec found for the sample")


def _mixed_column(exc: Exception, profile: SourceProfile) -> str | None:
    text = str(exc)
    return next((c.name for c in profile.columns if len(c.formats) > 1 and quote_ident(c.name) in text), None)


def _build(
    profile: SourceProfile, source: Source, destination: Destination, name: str, demoted: set[str]
) -> tuple[PipelineSpec, list[str]]:
    notes: list[str] = []
    steps: list[TransformStep] = []
    cols = [c for c in profile.columns if c.inferred_type is not None]
    markers = sorted({m for c in cols for m in c.na_markers})
    if markers and isinstance(source, CsvSource):
        source = source.model_copy(update={"null_values": sorted(set(source.null_values) | set(markers))})
        notes.append(f"NA markers read as null: {', '.join(repr(m) for m in markers)}")
    elif markers:
        for c in cols:
            if c.na_markers:
                listed = ", ".join(_sql_text(m.strip()) for m in c.na_markers)
                ident = quote_ident(c.name)
                expr = f"CASE WHEN trim(CAST({ident} AS VARCHAR)) IN ({listed}) THEN NULL ELSE {ident} END"
                steps.append(DeriveStep(column=c.name, expr=expr))
        notes.append(f"NA markers replaced by null: {', '.join(repr(m) for m in markers)}")

    typed = [c for c in cols if c.needs_cast and c.pii is None and c.name not in demoted]
    single = [c for c in typed if len(c.formats) <= 1]
    if single:
        formats = {c.name: c.cast_format for c in single if c.cast_format}
        steps.append(
            CastStep(columns={c.name: c.inferred_type for c in single if c.inferred_type}, formats=formats)
        )
        notes.append("cast: " + ", ".join(f"{c.name}->{c.inferred_type}" for c in single))
    for c in typed:
        if len(c.formats) > 1:
            mixed = _mixed_date_sql(c)
            if mixed is None:
                demoted.add(c.name)
                continue
            steps.append(DeriveStep(column=c.name, expr=mixed))
            notes.append(
                f"{c.name}: {c.inferred_type} in mixed formats ({', '.join(c.formats)}), parsed by a derive"
            )

    pii = [c for c in cols if c.pii is not None]
    for method in MaskMethod:
        masked = [c.name for c in pii if _MASKS[c.pii] is method]  # type: ignore[index]
        if masked:
            steps.append(MaskStep(columns=masked, method=method))
            notes.append(f"mask ({method.value}): {', '.join(masked)}")

    key = _key(profile)
    if profile.key_duplicates and key in profile.key_duplicates:
        steps.append(DedupeStep(keys=[key]))
        notes.append(f"dedupe on {key}: {profile.key_duplicates[key]} repeated key(s) in the sample")
    elif profile.duplicate_rows:
        steps.append(DedupeStep(keys=[c.name for c in cols]))
        notes.append(f"dedupe on all columns: {profile.duplicate_rows} repeated row(s) in the sample")

    quality: list[QualityRule] = []
    if key:
        quality.append(NotNullRule(columns=[key], on_fail=OnFail.QUARANTINE))
    for c in cols:
        if c.name == key or c.pii is not None:
            continue
        if _accepts_values(c):
            quality.append(
                AcceptedValuesRule(column=c.name, values=sorted(c.top_values), on_fail=OnFail.WARN)
            )
        elif _numeric(c, demoted) and c.min is not None and c.max is not None and c.min < c.max:
            quality.append(RangeRule(column=c.name, min=float(c.min), max=float(c.max), on_fail=OnFail.WARN))

    if (
        key
        and isinstance(destination, PostgresDestination | DuckDBDestination)
        and destination.mode is WriteMode.APPEND
    ):
        destination = destination.model_copy(update={"mode": WriteMode.MERGE, "keys": [key]})
        notes.append(f"destination merges on {key} so a re-run does not duplicate rows")

    spec = PipelineSpec(
        name=name,
        # a rule drawn from a sample is evidence of that sample: the spec says which one
        description=(
            f"suggested from a profile of {profile.sample_description()}; its quality rules hold on that "
            "sample"
        ),
        source=source,
        transforms=steps,
        quality=quality,
        destination=destination,
    )
    return spec, notes


def _key(profile: SourceProfile) -> str | None:
    for name in profile.key_duplicates:
        return name
    return next((k for k in profile.candidate_keys if profile.column(k).key_like), None)


def _accepts_values(c: ColumnProfile) -> bool:
    non_null = c.rows - c.null_count
    return (
        c.inferred_type is DataType.STRING
        and 2 <= len(c.top_values) <= ACCEPTED_VALUES_MAX
        and c.distinct_count * 2 <= non_null
    )


def _numeric(c: ColumnProfile, demoted: set[str]) -> bool:
    return c.inferred_type in (DataType.INT64, DataType.FLOAT64) and c.name not in demoted and not c.key_like


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _mixed_date_sql(c: ColumnProfile) -> str | None:
    """``COALESCE`` of one ``try_strptime`` per format. DuckDB's strptime has no ``%.f``: such a column stays
    text (None)."""
    if any("%.f" in f for f in c.formats):
        return None
    text = f"trim(CAST({quote_ident(c.name)} AS VARCHAR))"
    tries = ", ".join(f"try_strptime({text}, {_sql_text(f)})" for f in c.formats)
    sql_type = "DATE" if c.inferred_type is DataType.DATE else "TIMESTAMP"
    return f"CAST(COALESCE({tries}) AS {sql_type})"


# --------------------------------------------------------------------------------------- rendering
_DISCRIMINATORS = frozenset({"type", "op", "rule"})


def compact_dump(model: BaseModel) -> dict[str, Any]:
    """The model as JSON-safe data without fields left at their default (discriminators always kept), so a
    written spec shows what was decided, not every default."""
    out: dict[str, Any] = {}
    fields = type(model).model_fields
    ordered = sorted(fields.items(), key=lambda item: item[0] not in _DISCRIMINATORS)  # stable sort
    for name, info in ordered:
        value = getattr(model, name)
        optional = name not in _DISCRIMINATORS and not info.is_required()
        if optional and value == info.get_default(call_default_factory=True):
            continue
        out[name] = _compact(value)
    return out


def _compact(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return compact_dump(value)
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if hasattr(value, "value") and isinstance(value.value, str):  # StrEnum
        return value.value
    return value


def spec_to_yaml(spec: PipelineSpec) -> str:
    return yaml.safe_dump(compact_dump(spec), sort_keys=False, allow_unicode=True)
