"""The ``cast`` step: convert columns to spec types with polars, strictly.

Rules (explicit, so that a load never silently changes a value):

* text is trimmed before parsing; an empty (or all-blank) text becomes null, not an error;
* int64/float64: what polars parses (``+5``, ``1e3``, ``nan``...), plus thousands separators only in the
  unambiguous form ``1,234,567`` (optionally ``.5``): ``1,5`` is *not* read as 15 nor 1.5, it is an error;
* boolean: true/false/t/f/yes/no/1/0, any case;
* date: ``formats[column]`` (strptime) or ISO ``%Y-%m-%d``;
* timestamp: ``formats[column]`` or ISO-8601 (``T`` or space, optional fraction, optional ``Z``/``+hh:mm``);
  a value with an offset is converted to UTC; the result is a naive ``timestamp[us]``;
* from non-text columns: polars' cast, except that a float with a fraction does not become an int.

Any value that cannot be converted raises ``CastError`` naming the column, the count and the first few bad
values. Work is vectorized: the common format is tried first on the whole column and only the values it
did not parse go through the slower fallbacks.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pyarrow as pa

from services.transform.errors import CastError
from shared.spec.models import DataType

ARROW_TYPES: dict[DataType, pa.DataType] = {
    DataType.STRING: pa.string(),
    DataType.INT64: pa.int64(),
    DataType.FLOAT64: pa.float64(),
    DataType.BOOLEAN: pa.bool_(),
    DataType.DATE: pa.date32(),
    DataType.TIMESTAMP: pa.timestamp("us"),
}
_POLARS_TYPES: dict[DataType, pl.DataType] = {
    DataType.INT64: pl.Int64(),
    DataType.FLOAT64: pl.Float64(),
    DataType.BOOLEAN: pl.Boolean(),
    DataType.DATE: pl.Date(),
    DataType.TIMESTAMP: pl.Datetime("us"),
}
_GROUPED_INT = r"^[+-]?\d{1,3}(,\d{3})+$"
_GROUPED_FLOAT = r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$"
_BOOLEANS = {
    "true": True,
    "t": True,
    "yes": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "0": False,
}
_ISO_TIMESTAMPS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_MAX_EXAMPLES = 5

Parser = Callable[[pl.Series], pl.Series]


def cast_column(
    values: pa.ChunkedArray, target: DataType, fmt: str | None, *, where: str, column: str
) -> pa.ChunkedArray:
    """``values`` converted to ``target``; raises ``CastError`` if any non-null value does not convert."""
    arrow_type = ARROW_TYPES[target]
    if values.type == arrow_type:
        return values
    series = pl.Series(column, values)
    if series.dtype == pl.Categorical:
        series = series.cast(pl.String)
    if target is DataType.STRING:
        converted = series.cast(pl.String)
    elif series.dtype == pl.String:
        converted = _parse_text(series, target, fmt)
    else:
        converted = _convert(series, target)
    failed = converted.is_null() & series.is_not_null() & ~_blank(series)
    bad_count = int(failed.sum())
    if bad_count:
        examples = [str(v) for v in series.filter(failed).head(_MAX_EXAMPLES).to_list()]
        raise CastError(where, column, target.value, bad_count, examples)
    return pa.chunked_array([converted.to_arrow().cast(arrow_type)])


def _blank(series: pl.Series) -> pl.Series:
    if series.dtype != pl.String:
        return pl.repeat(False, len(series), eager=True)
    return series.str.strip_chars().str.len_bytes().eq(0).fill_null(False)


def _parse_text(series: pl.Series, target: DataType, fmt: str | None) -> pl.Series:
    text = series.str.strip_chars()
    text = pl.select(pl.when(text.str.len_bytes() > 0).then(text)).to_series()
    if target is DataType.INT64:
        return _with_fallbacks(text, [_number(pl.Int64()), _grouped(_GROUPED_INT, pl.Int64())])
    if target is DataType.FLOAT64:
        return _with_fallbacks(text, [_number(pl.Float64()), _grouped(_GROUPED_FLOAT, pl.Float64())])
    if target is DataType.BOOLEAN:
        return text.str.to_lowercase().replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
    if target is DataType.DATE:
        return text.str.strptime(pl.Date, fmt or "%Y-%m-%d", strict=False)
    formats = (fmt,) if fmt else _ISO_TIMESTAMPS
    return _with_fallbacks(text, [_timestamp(f) for f in formats])


def _convert(series: pl.Series, target: DataType) -> pl.Series:
    converted = series.cast(_POLARS_TYPES[target], strict=False)
    if target is DataType.INT64 and series.dtype.is_float():
        # polars truncates 1.5 to 1; a lossy cast is a bad value, not a conversion.
        lossy = (series != series.floor()).fill_null(False) | series.is_nan().fill_null(False)
        converted = pl.select(pl.when(~lossy).then(converted)).to_series()
    return converted


def _with_fallbacks(text: pl.Series, parsers: list[Parser]) -> pl.Series:
    """Apply ``parsers`` in order, each only to the values that the earlier ones left unparsed."""
    result = parsers[0](text)
    for parser in parsers[1:]:
        pending = result.is_null() & text.is_not_null()
        if not pending.any():
            break
        positions = pending.arg_true()
        result = result.scatter(positions, parser(text.gather(positions)))
    return result


def _number(dtype: pl.DataType) -> Parser:
    return lambda text: text.cast(dtype, strict=False)


def _grouped(pattern: str, dtype: pl.DataType) -> Parser:
    def parse(text: pl.Series) -> pl.Series:
        grouped = pl.select(
            pl.when(text.str.contains(pattern)).then(text.str.replace_all(",", ""))
        ).to_series()
        return grouped.cast(dtype, strict=False)

    return parse


def _timestamp(fmt: str) -> Parser:
    def parse(text: pl.Series) -> pl.Series:
        parsed = text.str.strptime(pl.Datetime("us"), fmt, strict=False)
        if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None:
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return parsed

    return parse
