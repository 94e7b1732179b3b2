"""What type a column of text holds, decided the way the ``cast`` step converts it.

Inference is on the *text* of each value (the CSV connector reads every column as a string) and follows
the ``cast`` step's rules (``shared/transform/casting.py``) so that what the profile calls int64 the cast
step can convert: values are trimmed, NA markers count as nulls, thousands separators only in the
unambiguous ``1,234,567`` form. A column is given a type only when *every* non-null sampled value fits it.

All work is vectorized: one polars ``select`` computes, for every text column at once, how many values
each candidate type or date format accepts (``candidate_counts``); a second pass runs only for columns
whose dates mix formats. The formats are shared with the healing remedies, which parse bad values with
the same list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from shared.spec.models import DataType

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
# ISO-8601 / RFC 3339 with a zone: ``Z`` or an offset (``+02:00``, ``+0200``), ``T`` or space, optional
# fraction. A column whose every value has one is a zoned timestamp: the cast step keeps it zoned (UTC),
# so it lands as ``timestamptz`` (not as a local time with its zone dropped). Not in TIMESTAMP_FORMATS:
# those are the naive forms the healing remedies and error descriptions try.
ISO_ZONED_TIMESTAMP = "%+"
_BOOLEAN_WORDS = ("true", "false", "t", "f", "yes", "no")  # 0/1 are left to int64
_GROUPED_INT = r"^[+-]?\d{1,3}(,\d{3})+$"
_GROUPED_FLOAT = r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$"
_LEADING_ZERO = r"^[+-]?0\d"


def is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def normalize(col: pl.Expr) -> pl.Expr:
    """Trimmed text with NA markers as null: what the cast step (plus null_values) would see."""
    trimmed = col.str.strip_chars()
    return pl.when(trimmed.str.to_lowercase().is_in(NA_MARKERS)).then(None).otherwise(trimmed)


def _ok(expr: pl.Expr) -> pl.Expr:
    return expr.is_not_null().sum()


def candidate_counts(frame: pl.DataFrame, names: Sequence[str]) -> dict[str, dict[str, int]]:
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
        candidates["zoned"] = _ok(v.str.strptime(pl.Datetime("us"), ISO_ZONED_TIMESTAMP, strict=False))
        exprs.extend(e.alias(f"{i}:{key}") for key, e in candidates.items())
    if not exprs:
        return {}
    row = frame.select(exprs).row(0, named=True)
    out: dict[str, dict[str, int]] = {name: {} for name in names}
    for key, value in row.items():
        index, what = key.split(":", 1)
        out[names[int(index)]][what] = int(value or 0)
    return out


def infer_text_type(
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
    if counts.get("zoned", 0) == n:
        notes.append("ISO-8601 with a zone (Z or an offset): kept zoned, as UTC")
        return DataType.TIMESTAMP, [ISO_ZONED_TIMESTAMP]
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


def typed_values(values: pl.Series, inferred: DataType, formats: list[str]) -> pl.Series:
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
