"""Arrow <-> PostgreSQL column types for the PostgreSQL sink.

New columns are created from the batch's Arrow type:

==========================  ===========================
Arrow                       PostgreSQL
==========================  ===========================
int8, int16, uint8          smallint
int32, uint16               integer
int64, uint32               bigint
uint64                      numeric(20,0)
float16, float32            real
float64                     double precision
string, large_string        text
bool                        boolean
date32, date64              date
timestamp with a zone       timestamp with time zone
timestamp without a zone    timestamp without time zone
decimal(p, s)               numeric(p,s)
binary, large_binary        bytea
null (all-null column)      text
dictionary<_, T>            the mapping of T
==========================  ===========================

Writing into an existing column, the batch column is cast to the Arrow type whose binary COPY form the
column accepts (``arrow_type_for``). Only casts within a family are allowed (integers widen into any
numeric column, floats take integers, text takes only strings...); a value that does not fit (an int64 into
an ``integer`` column that overflows) or a family change (text arriving for a bigint column) raises
``IncompatibleSchemaError``. Timestamps are stored to the microsecond, PostgreSQL's resolution.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from services.load.exceptions import IncompatibleSchemaError
from shared.redaction import scrub

_NUMERIC_TYPMOD = re.compile(r"^numeric\((\d+),(\d+)\)$")


class UnmappedTypeError(Exception):
    """An Arrow type with no PostgreSQL column type (list, struct, ...)."""


def pg_type_for(arrow_type: pa.DataType) -> str:
    """The column type used when a table or a column is created for this Arrow type."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return pg_type_for(t.value_type)
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_uint64(t):
        return "numeric(20,0)"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "real"
    if pa.types.is_float64(t):
        return "double precision"
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_null(t)
    ):
        return "text"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp with time zone" if t.tz is not None else "timestamp without time zone"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytea"
    raise UnmappedTypeError(str(t))


def _family(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz is not None else "timestamp"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return str(t)


# Which batch families each column family accepts (always after a checked cast).
_ACCEPTS: dict[str, frozenset[str]] = {
    "integer": frozenset({"integer"}),
    "float": frozenset({"float", "integer"}),
    "decimal": frozenset({"decimal", "integer"}),
    "string": frozenset({"string"}),
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "timestamptz": frozenset({"timestamptz"}),
    "timestamp": frozenset({"timestamp"}),
    "binary": frozenset({"binary"}),
}

_FIXED: dict[str, pa.DataType] = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "text": pa.string(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
    "bytea": pa.binary(),
}


def arrow_type_for(pg_type: str, batch_type: pa.DataType) -> pa.DataType | None:
    """The Arrow type a batch column is cast to before a binary COPY into a ``pg_type`` column; None when
    this sink cannot write such a column at all (jsonb, uuid, arrays...)."""
    if pg_type in _FIXED:
        return _FIXED[pg_type]
    if pg_type.startswith(("character varying", "character(")) or pg_type == "character":
        return pa.string()
    match = _NUMERIC_TYPMOD.match(pg_type)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if pg_type == "numeric":  # unconstrained: keep the batch's own scale
        return batch_type if pa.types.is_decimal(batch_type) else pa.decimal128(38, 0)
    return None


def conform_column(table_name: str, column: str, pg_type: str, values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Cast one batch column for an existing table column, or explain exactly why it cannot be stored."""
    batch_type = values.type
    if pa.types.is_dictionary(batch_type):
        values = values.cast(batch_type.value_type)
        batch_type = values.type
    target = arrow_type_for(pg_type, batch_type)

    def incompatible(detail: str = "") -> IncompatibleSchemaError:
        return IncompatibleSchemaError(table_name, column, pg_type, str(batch_type), detail)

    if target is None:
        raise incompatible("the sink cannot write this column type")
    if pa.types.is_null(batch_type):  # an all-null column fits any column
        return pa.chunked_array([pa.nulls(len(values), target)], type=target)
    if _family(batch_type) not in _ACCEPTS.get(_family(target), frozenset()):
        raise incompatible()
    if batch_type == target:
        return values
    # Nanoseconds cannot be stored anyway (truncated); every other narrowing must not lose a value.
    try:
        return pc.cast(values, target, safe=not pa.types.is_timestamp(target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise incompatible(scrub(str(exc))) from exc  # pyarrow quotes the value that did not fit
