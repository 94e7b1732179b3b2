"""Avro record schemas derived from Arrow schemas, for rows produced to a Kafka destination.

Every field is nullable (``["null", T]`` with default null) because Arrow columns are. Record names live in
namespace ``io.aoetl.rows``; the record is named after the topic. Rows are single-object encoded
(``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body); the Kafka sink publishes each derived schema on the
schemas topic keyed by fingerprint hex, the convention of ``shared/avro/schema_topic.py``, so a consumer
resolves the writer schema from Kafka alone.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import fastavro
import pyarrow as pa
from fastavro.schema import fingerprint, to_parsing_canonical_form

from shared.errors import DataError

NAMESPACE = "io.aoetl.rows"
MAGIC = b"\xc3\x01"
_INVALID = re.compile(r"[^A-Za-z0-9_]")


def avro_name(value: str) -> str:
    """A valid Avro name for an arbitrary column or topic name."""
    name = _INVALID.sub("_", value)
    return name if name and not name[0].isdigit() else f"_{name}"


def avro_type(arrow_type: pa.DataType, column: str) -> Any:
    t = arrow_type
    if pa.types.is_dictionary(t):
        return avro_type(t.value_type, column)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t):
        return "int"
    if pa.types.is_uint8(t) or pa.types.is_uint16(t):
        return "int"
    if pa.types.is_integer(t):  # int64, uint32, uint64 (values above 2^63 fail to encode)
        return "long"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_date(t):
        return {"type": "int", "logicalType": "date"}
    if pa.types.is_timestamp(t):
        logical = "timestamp-micros" if t.tz is not None else "local-timestamp-micros"
        return {"type": "long", "logicalType": logical}
    if pa.types.is_decimal(t):
        return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale}
    raise DataError(f"column {column!r}: no Avro mapping for Arrow type {t}")


def avro_schema_for(schema: pa.Schema, record_name: str) -> dict[str, Any]:
    fields: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for field in schema:
        name = avro_name(field.name)
        if name in seen:
            raise DataError(f"columns {seen[name]!r} and {field.name!r} both map to Avro field {name!r}")
        seen[name] = field.name
        branch = "null" if pa.types.is_null(field.type) else avro_type(field.type, field.name)
        fields.append(
            {"name": name, "type": "null" if branch == "null" else ["null", branch], "default": None}
        )
    return {"type": "record", "name": avro_name(record_name), "namespace": NAMESPACE, "fields": fields}


class RowEncoder:
    """Single-object encoder for rows of one Arrow schema."""

    def __init__(self, schema: pa.Schema, record_name: str) -> None:
        self.schema_json = avro_schema_for(schema, record_name)
        self._parsed = fastavro.parse_schema(self.schema_json)
        canonical = to_parsing_canonical_form(self._parsed)
        self.fingerprint = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        self._names = [f["name"] for f in self.schema_json["fields"]]

    @property
    def schema_text(self) -> str:
        return json.dumps(self.schema_json, separators=(",", ":"))

    def encode_rows(self, table: pa.Table) -> list[bytes]:
        header = MAGIC + self.fingerprint
        out: list[bytes] = []
        for row in table.to_pylist():
            buffer = io.BytesIO()
            buffer.write(header)
            fastavro.schemaless_writer(
                buffer, self._parsed, dict(zip(self._names, row.values(), strict=True))
            )
            out.append(buffer.getvalue())
        return out


def decode_row(data: bytes, schema_json: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``RowEncoder.encode_rows`` for one message (tests and consumers without a catalog)."""
    if data[:2] != MAGIC:
        raise DataError("not an Avro single-object message")
    body = io.BytesIO(data[len(MAGIC) + 8 :])
    record: dict[str, Any] = fastavro.schemaless_reader(body, fastavro.parse_schema(schema_json))  # type: ignore[assignment]
    return record
