"""Profile a sample of a source: inferred types, nulls, distinct counts, keys, PII, ranges.

Inference is on the *text* of each value (the CSV connector reads every column as a string) and follows
the ``cast`` step's rules (``shared/transform/casting.py``) so that what the profile calls int64 the cast
step can convert: values are trimmed, NA markers count as nulls, thousands separators only in the
unambiguous ``1,234,567`` form. A column is given a type only when *every* non-null sampled value fits it.

All work is vectorized: one polars ``select`` computes, for every text column at once, how many values
each candidate type or date format accepts; a second pass runs only for columns whose dates mix formats.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from services.orchestrator.agent.sources import sample_source
from shared.spec.models import DataType, Source

NA_MARKERS = ("", "na", "n/a", "null", "none", "-")
ISO_DATE = "%Y-%m-%d"
DATE_FORMATS = (ISO_DATE, "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y", "%d-%m-%Y")
# The first six are ISO forms the cast step parses without a format; the rest need ``formats``.
TIMESTAMP_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
)
ISO_TIMESTAMPS = frozenset(TIMESTAMP_FORMATS[:6])
_BOOLEAN_WORDS = ("true", "false", "t", "f", "yes", "no")  # 0/1 are left to int64
_GROUPED_INT = r"^[+-]?\d{1,3}(,\d{3})+$"
_GROUPED_FLOAT = r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$"
_LEADING_ZERO = r"^[+-]?0\d"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
_PHONE_CHARS = r"^\+?[\d\s().-]+$"
_KEY_NAME = re.compile(r"(?i)(^|_)(id|key|uuid|code|number|no)$|[a-z]Id$")
_PHONE_NAME = re.compile(r"(?i)phone|mobile|cell|fax|(^|_)tel($|_)")
PII_SHARE = 0.8  # share of non-null values that must look like PII for the column to be flagged
LOW_CARDINALITY = 20  # top values are listed for text columns with at most this many distinct values


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CARD_NUMBER = "card_number"


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

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


# ------------------------------------------------------------------------------------------- entry
def profile_source(source: Source, *, sample_rows: int = 10_000) -> SourceProfile:
    """Sample the source (first split, first rows) and profile the sample."""
    return profile_table(sample_source(source, sample_rows), source=source)


def profile_table(table: pa.Table, *, source: Source | None = None) -> SourceProfile:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    text_columns = [n for n, t in zip(table.column_names, table.schema.types, strict=True) if _is_text(t)]
    normalized = frame.select([_normalize(pl.col(n)).alias(n) for n in text_columns] if text_columns else [])
    counts = _candidate_counts(normalized, text_columns)
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
        columns=columns,
        candidate_keys=keys,
        key_duplicates=key_duplicates,
        duplicate_rows=_duplicate_rows(frame),
    )
    profile._sample = table
    return profile


# ------------------------------------------------------------------------------------ text columns
def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _normalize(col: pl.Expr) -> pl.Expr:
    """Trimmed text with NA markers as null: what the cast step (plus null_values) would see."""
    trimmed = col.str.strip_chars()
    return pl.when(trimmed.str.to_lowercase().is_in(NA_MARKERS)).then(None).otherwise(trimmed)


def _ok(expr: pl.Expr) -> pl.Expr:
    return expr.is_not_null().sum()


def _candidate_counts(frame: pl.DataFrame, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """For each text column: how many values each type / format accepts, in one parallel pass."""
    exprs: list[pl.Expr] = []
    for i, name in enumerate(names):
        v = pl.col(name)
        grouped_int = v.str.contains(_GROUPED_INT)
        grouped_float = v.str.contains(_GROUPED_FLOAT)
        candidates: dict[str, pl.Expr] = {
            "non_null": v.is_not_null().sum(),
            "int": (v.cast(pl.Int64, strict=False).is_not_null() | grouped_int).sum(),
            "float": (v.cast(pl.Float64, strict=False).is_not_null() | grouped_float).sum(),
            "bool": v.str.to_lowercase().is_in(_BOOLEAN_WORDS).sum(),
            "grouped": grouped_float.sum(),
            "leading_zero": v.str.contains(_LEADING_ZERO).sum(),
        }
        for j, fmt in enumerate(DATE_FORMATS):
            candidates[f"d{j}"] = _ok(v.str.strptime(pl.Date, fmt, strict=False))
        for j, fmt in enumerate(TIMESTAMP_FORMATS):
            candidates[f"t{j}"] = _ok(v.str.strptime(pl.Datetime("us"), fmt, strict=False))
        exprs.extend(e.alias(f"{i}:{key}") for key, e in candidates.items())
    if not exprs:
        return {}
    row = frame.select(exprs).row(0, named=True)
    out: dict[str, dict[str, int]] = {name: {} for name in names}
    for key, value in row.items():
        index, what = key.split(":", 1)
        out[names[int(index)]][what] = int(value or 0)
    return out


def _text_column(
    name: str, source_type: str, raw: pl.Series, values: pl.Series, counts: dict[str, int]
) -> ColumnProfile:
    rows = len(raw)
    non_null = counts["non_null"]
    notes: list[str] = []
    markers = sorted(set(raw.filter(raw.is_not_null() & values.is_null()).unique().to_list()))
    inferred, formats = _infer_text_type(values, counts, notes)
    typed = _typed_values(values, inferred, formats)
    distinct = typed.drop_nulls().n_unique() if non_null else 0
    pii = _detect_pii(name, values, inferred)
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


def _infer_text_type(
    values: pl.Series, counts: dict[str, int], notes: list[str]
) -> tuple[DataType, list[str]]:
    n = counts["non_null"]
    if n == 0:
        notes.append("no non-null value in the sample")
        return DataType.STRING, []
    if counts["bool"] == n:
        return DataType.BOOLEAN, []
    # Leading zeros (zip codes, account numbers) would be lost by a numeric cast: keep them as text.
    numeric_ok = counts["leading_zero"] == 0
    if counts["leading_zero"] and counts["int"] == n:
        notes.append("numeric text with leading zeros kept as string")
    if numeric_ok and counts["int"] == n:
        return DataType.INT64, []
    if numeric_ok and counts["float"] == n:
        return DataType.FLOAT64, []
    for prefix, kind, formats in (
        ("d", DataType.DATE, DATE_FORMATS),
        ("t", DataType.TIMESTAMP, TIMESTAMP_FORMATS),
    ):
        full = [fmt for j, fmt in enumerate(formats) if counts[f"{prefix}{j}"] == n]
        if full:
            if "%d/%m/%Y" in full and "%m/%d/%Y" in full:
                notes.append("day/month order is ambiguous in the sample; %d/%m/%Y assumed")
            return kind, [full[0]]
        partial = [fmt for j, fmt in enumerate(formats) if counts[f"{prefix}{j}"] > 0]
        if partial:
            mixed = _cover(values, kind, partial)
            if mixed:
                notes.append(f"mixed {kind.value} formats: {', '.join(mixed)}")
                return kind, mixed
    return DataType.STRING, []


def _parse(values: pl.Series | pl.Expr, kind: DataType, fmt: str) -> Any:
    target = pl.Date() if kind is DataType.DATE else pl.Datetime("us")
    return values.str.strptime(target, fmt, strict=False)


def _cover(values: pl.Series, kind: DataType, formats: list[str]) -> list[str]:
    """The fewest formats (greedy, at most 3) that together parse every value; [] if none do."""
    remaining = values.drop_nulls()
    chosen: list[str] = []
    while len(remaining) and len(chosen) < 3:
        best = max(formats, key=lambda f: int(_parse(remaining, kind, f).is_not_null().sum()))
        parsed = _parse(remaining, kind, best)
        if not parsed.is_not_null().any():
            return []
        chosen.append(best)
        remaining = remaining.filter(parsed.is_null())
    return chosen if not len(remaining) else []


def _typed_values(values: pl.Series, inferred: DataType, formats: list[str]) -> pl.Series:
    if inferred is DataType.INT64:
        return values.str.replace_all(",", "").cast(pl.Int64, strict=False)
    if inferred is DataType.FLOAT64:
        return values.str.replace_all(",", "").cast(pl.Float64, strict=False)
    if inferred is DataType.BOOLEAN:
        return values.str.to_lowercase().is_in(("true", "t", "yes"))
    if inferred in (DataType.DATE, DataType.TIMESTAMP) and formats:
        parsed = [_parse(pl.col(values.name), inferred, f) for f in formats]
        return values.to_frame().select(pl.coalesce(parsed)).to_series()
    return values


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
    pii = _detect_pii(name, values.cast(pl.String), inferred) if inferred is DataType.INT64 else None
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


# ------------------------------------------------------------------------------------ stats, PII
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


def _detect_pii(name: str, text: pl.Series, inferred: DataType | None) -> PiiKind | None:
    present = text.drop_nulls()
    n = len(present)
    if not n or inferred not in (DataType.STRING, DataType.INT64):
        return None
    frame = present.to_frame("v")
    v = pl.col("v")
    digits = v.str.replace_all(r"[\s-]", "")
    digit_count = v.str.count_matches(r"\d")
    shares = frame.select(
        email=v.str.contains(_EMAIL).mean(),
        card=(digits.str.contains(r"^\d{13,19}$") & _luhn_ok(digits)).mean(),
        phone=(v.str.contains(_PHONE_CHARS) & digit_count.is_between(7, 15)).mean(),
    ).row(0, named=True)
    if (shares["email"] or 0) >= PII_SHARE:
        return PiiKind.EMAIL
    if (shares["card"] or 0) >= PII_SHARE:
        return PiiKind.CARD_NUMBER
    # Integer columns of 7+ digits are often ids; only a phone-like name makes them phone numbers.
    phone_like = (shares["phone"] or 0) >= PII_SHARE
    if phone_like and (inferred is DataType.STRING or _PHONE_NAME.search(name)):
        return PiiKind.PHONE
    return None


def _luhn_ok(digits: pl.Expr) -> pl.Expr:
    """The Luhn checksum, vectorized: every second digit from the right is doubled (minus 9 above 9)."""
    reversed_digits = digits.str.reverse()
    total = pl.lit(0)
    for position in range(19):
        d = reversed_digits.str.slice(position, 1).cast(pl.Int32, strict=False).fill_null(0)
        if position % 2:
            d = d * 2
            d = pl.when(d > 9).then(d - 9).otherwise(d)
        total = total + d
    return (total % 10) == 0


def _can_be_key(col: ColumnProfile) -> bool:
    return col.inferred_type in (DataType.INT64, DataType.STRING) and col.pii is None


def _duplicate_rows(frame: pl.DataFrame) -> int:
    hashable = [n for n, t in frame.schema.items() if not isinstance(t, pl.List | pl.Struct | pl.Array)]
    if not hashable or not frame.height:
        return 0
    return frame.height - frame.select(hashable).unique().height
