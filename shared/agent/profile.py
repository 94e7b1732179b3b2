"""Profile a sample of a source: inferred types, nulls, distinct counts, keys, PII, ranges.

The profile is what the agent knows of a source: the deterministic suggestion and the LLM planner both
work from it, and it is shown to users (``aoetl agent profile``) and to the model, so it never carries a
PII value. Type inference of text columns is in ``inference`` and PII detection in ``pii``; this module
puts the column profiles together and finds candidate keys and duplicates.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from shared.agent.inference import (
    ISO_DATE,
    ISO_TIMESTAMPS,
    candidate_counts,
    infer_text_type,
    is_text,
    normalize,
    typed_values,
)
from shared.agent.pii import PiiKind, detect_pii
from shared.agent.sampling import DEFAULT_SEED
from shared.agent.sources import sample_source
from shared.spec.models import DataType, Source

_KEY_NAME = re.compile(r"(?i)(^|_)(id|key|uuid|code|number|no)$|[a-z]Id$")
LOW_CARDINALITY = 20  # top values are listed for text columns with at most this many distinct values


class ColumnProfile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    source_type: str = Field(description="Arrow type as read by the connector")
    inferred_type: DataType | None = Field(description="None for nested/binary columns")
    formats: list[str] = Field(
        default_factory=list, description="strptime formats of a date/timestamp column; several = mixed"
    )
    rows: int
    null_count: int = Field(description="nulls plus NA markers")
    null_rate: float
    distinct_count: int
    unique: bool = Field(description="no nulls and no repeated value in the sample")
    na_markers: list[str] = Field(default_factory=list, description="raw texts read as null (N/A, -, ...)")
    thousands_separator: bool = False
    pii: PiiKind | None = None
    min: Any = None
    max: Any = None
    top_values: list[str] = Field(default_factory=list, description="most frequent first (text columns)")
    notes: list[str] = Field(default_factory=list)

    @property
    def needs_cast(self) -> bool:
        return self.source_type in ("string", "large_string") and self.inferred_type not in (
            None,
            DataType.STRING,
        )

    @property
    def cast_format(self) -> str | None:
        """The ``formats`` entry a cast step needs (None for ISO forms, which it parses by itself)."""
        if len(self.formats) != 1:
            return None
        fmt = self.formats[0]
        return None if fmt == ISO_DATE or fmt in ISO_TIMESTAMPS else fmt

    @property
    def key_like(self) -> bool:
        return bool(_KEY_NAME.search(self.name))


class SourceProfile(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: dict[str, Any] = Field(description="the profiled source spec")
    sampled_rows: int
    total_rows: int | None = Field(None, description="rows of the whole input the sample was drawn from")
    sample_method: str = Field("", description="how the sample was drawn, e.g. 'uniform ... seed 0'")
    columns: list[ColumnProfile]
    candidate_keys: list[str] = Field(description="unique non-null columns, key-like names first")
    key_duplicates: dict[str, int] = Field(
        default_factory=dict, description="key-like columns with repeated values -> extra rows"
    )
    duplicate_rows: int = Field(0, description="rows that repeat an earlier row exactly")
    _sample: pa.Table | None = PrivateAttr(default=None)

    @property
    def has_sample(self) -> bool:
        return self._sample is not None

    @property
    def sample(self) -> pa.Table:
        if self._sample is None:
            raise ValueError("this profile carries no sample rows (it was loaded from JSON)")
        return self._sample

    def sample_description(self) -> str:
        """Where the profile's figures (and any rule drawn from them) come from, as one phrase."""
        if self.total_rows is None:
            return f"{self.sampled_rows:,} rows"
        if self.total_rows == self.sampled_rows:
            return f"all {self.total_rows:,} rows of the input"
        return f"{self.sampled_rows:,} rows sampled of {self.total_rows:,} ({self.sample_method})"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


# ------------------------------------------------------------------------------------------- entry
def profile_source(source: Source, *, sample_rows: int = 10_000, seed: int = DEFAULT_SEED) -> SourceProfile:
    """Sample the whole source uniformly (``shared.agent.sampling``) and profile the sample."""
    sample = sample_source(source, sample_rows, seed=seed)
    method = f"{sample.method}, seed {sample.seed}"
    return profile_table(sample.table, source=source, total_rows=sample.total_rows, sample_method=method)


def profile_table(
    table: pa.Table,
    *,
    source: Source | None = None,
    total_rows: int | None = None,
    sample_method: str = "",
) -> SourceProfile:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    text_columns = [n for n, t in zip(table.column_names, table.schema.types, strict=True) if is_text(t)]
    normalized = frame.select([normalize(pl.col(n)).alias(n) for n in text_columns] if text_columns else [])
    counts = candidate_counts(normalized, text_columns)
    columns: list[ColumnProfile] = []
    for name, arrow_type in zip(table.column_names, table.schema.types, strict=True):
        if name in counts:
            columns.append(_text_column(name, str(arrow_type), frame[name], normalized[name], counts[name]))
        else:
            columns.append(_typed_column(name, arrow_type, frame[name]))
    keys = [c.name for c in columns if c.unique and _can_be_key(c)]
    keys.sort(key=lambda n: not _KEY_NAME.search(n))
    key_duplicates = {
        c.name: (c.rows - c.null_count) - c.distinct_count
        for c in columns
        if c.key_like
        and _can_be_key(c)
        and c.null_count == 0
        and not c.unique
        and c.distinct_count >= 0.5 * c.rows
    }
    profile = SourceProfile(
        source=source.model_dump(mode="json") if source is not None else {},
        sampled_rows=table.num_rows,
        total_rows=total_rows,
        sample_method=sample_method,
        columns=columns,
        candidate_keys=keys,
        key_duplicates=key_duplicates,
        duplicate_rows=_duplicate_rows(frame),
    )
    profile._sample = table
    return profile


def _text_column(
    name: str, source_type: str, raw: pl.Series, values: pl.Series, counts: dict[str, int]
) -> ColumnProfile:
    rows = len(raw)
    non_null = counts["non_null"]
    notes: list[str] = []
    markers = sorted(set(raw.filter(raw.is_not_null() & values.is_null()).unique().to_list()))
    inferred, formats = infer_text_type(values, counts, notes)
    typed = typed_values(values, inferred, formats)
    distinct = typed.drop_nulls().n_unique() if non_null else 0
    pii = detect_pii(name, values, inferred)
    top: list[str] = []
    # PII values never leave the profile (it is shown to users and sent to the model).
    if inferred is DataType.STRING and pii is None and 0 < distinct <= LOW_CARDINALITY:
        counted = values.drop_nulls().value_counts(sort=True)
        top = [str(v) for v in counted[values.name].to_list()]
    low, high = _min_max(typed, inferred)
    return ColumnProfile(
        name=name,
        source_type=source_type,
        inferred_type=inferred,
        formats=formats,
        rows=rows,
        null_count=rows - non_null,
        null_rate=(rows - non_null) / rows if rows else 0.0,
        distinct_count=distinct,
        unique=non_null == rows and distinct == rows and rows > 1,
        na_markers=[m for m in markers if isinstance(m, str)],
        thousands_separator=inferred in (DataType.INT64, DataType.FLOAT64) and counts["grouped"] > 0,
        pii=pii,
        min=low,
        max=high,
        top_values=top,
        notes=notes,
    )


# ----------------------------------------------------------------------------------- typed columns
_ARROW_KINDS: tuple[tuple[Any, DataType], ...] = (
    (pa.types.is_boolean, DataType.BOOLEAN),
    (pa.types.is_integer, DataType.INT64),
    (pa.types.is_floating, DataType.FLOAT64),
    (pa.types.is_decimal, DataType.FLOAT64),
    (pa.types.is_date, DataType.DATE),
    (pa.types.is_timestamp, DataType.TIMESTAMP),
    (pa.types.is_null, DataType.STRING),
)


def _typed_column(name: str, arrow_type: pa.DataType, values: pl.Series) -> ColumnProfile:
    inferred = next((kind for test, kind in _ARROW_KINDS if test(arrow_type)), None)
    notes = [] if inferred is not None else [f"{arrow_type} columns are not profiled"]
    rows = len(values)
    nulls = values.null_count()
    distinct = values.drop_nulls().n_unique() if inferred is not None and rows > nulls else 0
    low, high = _min_max(values, inferred) if inferred is not None else (None, None)
    pii = detect_pii(name, values.cast(pl.String), inferred) if inferred is DataType.INT64 else None
    return ColumnProfile(
        name=name,
        source_type=str(arrow_type),
        inferred_type=inferred,
        rows=rows,
        null_count=nulls,
        null_rate=nulls / rows if rows else 0.0,
        distinct_count=distinct,
        unique=inferred is not None and nulls == 0 and distinct == rows and rows > 1,
        pii=pii,
        min=low,
        max=high,
        notes=notes,
    )


# ------------------------------------------------------------------------------------------ stats
def _min_max(values: pl.Series, inferred: DataType | None) -> tuple[Any, Any]:
    if inferred not in (DataType.INT64, DataType.FLOAT64, DataType.DATE, DataType.TIMESTAMP):
        return None, None
    present = values.drop_nulls()
    if inferred is DataType.FLOAT64:
        present = present.filter(present.is_finite())
    if not len(present):
        return None, None
    return _json_value(present.min()), _json_value(present.max())


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return value


def _can_be_key(col: ColumnProfile) -> bool:
    return col.inferred_type in (DataType.INT64, DataType.STRING) and col.pii is None


def _duplicate_rows(frame: pl.DataFrame) -> int:
    hashable = [n for n, t in frame.schema.items() if not isinstance(t, pl.List | pl.Struct | pl.Array)]
    if not hashable or not frame.height:
        return 0
    return frame.height - frame.select(hashable).unique().height
