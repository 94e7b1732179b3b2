"""Typed Avro errors. Decode errors are terminal (the same bytes will never decode), so consumers route
them to the dead-letter topic; only an unreachable schema source is worth a retry.
"""

from __future__ import annotations

from shared.errors import TerminalError, TransientError


class AvroError(TerminalError):
    """Base of the terminal Avro errors (encode and decode)."""


class UnknownSchemaError(AvroError):
    """No schema of that name in the catalog: a programming or packaging error."""


class InvalidRecordError(AvroError):
    """Encode time: the datum does not match the schema (caught before any byte is written)."""


class AvroDecodeError(AvroError):
    """These bytes cannot be turned into the requested record."""


class NotSingleObjectError(AvroDecodeError):
    """Missing or wrong magic bytes, or a body that is not valid Avro for its writer schema."""


class UnknownFingerprintError(AvroDecodeError):
    """The writer schema (fingerprint or registry id) is known neither locally nor to the schema source."""


class TruncatedMessageError(AvroDecodeError):
    """The message ends before the header or the record does."""


class TrailingBytesError(AvroDecodeError):
    """Bytes are left after the record: the writer schema cannot be the one that wrote this message."""


class SchemaResolutionError(AvroDecodeError):
    """The reader schema cannot read what the writer schema wrote (Avro schema-resolution rules)."""


class ModelValidationError(AvroDecodeError):
    """The record decoded but breaks a rule of the pydantic model (e.g. a range rule with min > max)."""


class SchemaSourceUnavailableError(TransientError):
    """The schemas topic or the Schema Registry could not be reached; the lookup may succeed later."""
