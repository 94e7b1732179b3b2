"""Avro on Kafka: the schema catalog, the serde (single-object encoding or Schema Registry framing), the
schemas topic, the evolution check and the typed decode errors."""

from shared.avro.catalog import SchemaCatalog, SchemaEntry
from shared.avro.errors import (
    AvroDecodeError,
    AvroError,
    InvalidRecordError,
    ModelValidationError,
    NotSingleObjectError,
    SchemaResolutionError,
    SchemaSourceUnavailableError,
    TrailingBytesError,
    TruncatedMessageError,
    UnknownFingerprintError,
    UnknownSchemaError,
)
from shared.avro.factory import SerdeSettings, make_serde
from shared.avro.serde import AvroSerde

__all__ = [
    "AvroDecodeError",
    "AvroError",
    "AvroSerde",
    "InvalidRecordError",
    "ModelValidationError",
    "NotSingleObjectError",
    "SchemaCatalog",
    "SchemaEntry",
    "SchemaResolutionError",
    "SchemaSourceUnavailableError",
    "SerdeSettings",
    "TrailingBytesError",
    "TruncatedMessageError",
    "UnknownFingerprintError",
    "UnknownSchemaError",
    "make_serde",
]
