"""``AvroSerde``: contracts <-> bytes on Kafka.

Encoding validates the datum first, so a bad record fails at the producer with the field that is wrong
instead of as an opaque fastavro error. Decoding always reads with the *writer* schema named in the header,
resolved to the reader's current schema, and refuses anything it cannot fully account for: every byte must
be consumed, and any fastavro failure becomes a typed ``AvroDecodeError`` so garbage never turns into a
silently wrong record.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, TypeVar

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError as FastavroResolutionError
from fastavro.types import Schema
from fastavro.validation import ValidationError, validate
from pydantic import ValidationError as PydanticValidationError

from shared.avro.catalog import SchemaCatalog, SchemaEntry
from shared.avro.convert import from_datum, to_datum
from shared.avro.errors import (
    AvroDecodeError,
    InvalidRecordError,
    ModelValidationError,
    NotSingleObjectError,
    SchemaResolutionError,
    TrailingBytesError,
    TruncatedMessageError,
)
from shared.avro.framing import Framing, SingleObjectFraming, WriterSchemaSource
from shared.contracts import Contract

if TYPE_CHECKING:
    from shared.avro.factory import SerdeSettings

C = TypeVar("C", bound=Contract)


class AvroSerde:
    """Thread-safe for use from one event loop or many threads: caches only grow and hold immutable data."""

    def __init__(
        self,
        catalog: SchemaCatalog | None = None,
        *,
        resolver: WriterSchemaSource | None = None,
        framing: Framing | None = None,
    ):
        self.catalog = catalog if catalog is not None else SchemaCatalog.default()
        self.framing = framing or SingleObjectFraming(self.catalog, resolver)
        self._resolution: dict[tuple[bytes, str], list[str]] = {}

    @classmethod
    def from_settings(cls, settings: SerdeSettings | None = None) -> AvroSerde:
        """Schema Registry framing if ``AOETL_SCHEMA_REGISTRY_URL`` is set, else single-object encoding
        with the schemas topic on ``KAFKA_BOOTSTRAP_SERVERS`` as fallback for unknown writers."""
        from shared.avro.factory import make_serde

        return make_serde(settings)

    # ------------------------------------------------------------------------------------- encoding
    def encode(self, model: Contract) -> bytes:
        return self.encode_record(type(model).avro_name, to_datum(model))

    def encode_record(self, name: str, record: dict[str, Any]) -> bytes:
        """``record`` is a fastavro datum: union variants in tuple notation ``(full name, fields)``."""
        entry = self.catalog.entry(name)
        # The yes/no check first: the raising form builds (and json-formats) a ValidationError for every
        # union branch a valid datum does not take (each optional field set), ~3x the cost of the check and
        # most of an encode. Only a datum that fails is checked again, for the fields that are wrong.
        if not validate(record, entry.parsed, raise_errors=False, strict=True):
            try:
                validate(record, entry.parsed, raise_errors=True, strict=True)
            except ValidationError as exc:
                raise InvalidRecordError(f"{name}: {'; '.join(map(str, exc.errors))}") from exc
            raise InvalidRecordError(f"{name}: the record does not match its schema")
        out = io.BytesIO()
        out.write(self.framing.header(entry))
        try:
            schemaless_writer(out, entry.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # what validate cannot foresee
            raise InvalidRecordError(f"{name}: {exc}") from exc
        return out.getvalue()

    # ------------------------------------------------------------------------------------- decoding
    def decode(self, data: bytes, model_type: type[C]) -> C:
        record = self.decode_record(data, model_type.avro_name)
        try:
            return model_type.model_validate(from_datum(record))
        except (PydanticValidationError, KeyError) as exc:
            raise ModelValidationError(f"{model_type.avro_name}: {exc}") from exc

    def decode_record(self, data: bytes, reader_name: str | None = None) -> dict[str, Any]:
        """The record as a fastavro datum (variants as ``(full name, fields)``), read with the writer
        schema resolved to ``reader_name``'s current schema; without a reader, as the writer wrote it."""
        writer, start = self.framing.writer_of(data, reader_name)
        reader = self._reader_for(writer, reader_name)
        body = io.BytesIO(data)
        body.seek(start)
        try:
            record = schemaless_reader(
                body, writer.parsed, reader, return_record_name=True, return_record_name_override=True
            )
        except EOFError as exc:
            raise TruncatedMessageError(f"{writer.name}: message ends inside the record") from exc
        except FastavroResolutionError as exc:
            raise SchemaResolutionError(f"{writer.name} -> {reader_name}: {exc}") from exc
        except AvroDecodeError:
            raise
        except Exception as exc:  # any other failure means the body is not this schema
            if isinstance(exc, IndexError) and body.tell() >= len(data):  # fastavro: ran out of bytes
                raise TruncatedMessageError(f"{writer.name}: message ends inside the record") from exc
            raise NotSingleObjectError(f"{writer.name}: body does not decode ({exc!r})") from exc
        if body.tell() != len(data):
            raise TrailingBytesError(f"{writer.name}: {len(data) - body.tell()} bytes left after the record")
        if not isinstance(record, dict):
            raise NotSingleObjectError(f"{writer.name} is not a record schema")
        return record

    def _reader_for(self, writer: SchemaEntry, reader_name: str | None) -> Schema | None:
        """The reader schema to resolve to, or None to read with the writer schema as it is."""
        if reader_name is None:
            return None
        if reader_name not in self.catalog:
            # a consumer that knows no schemas locally reads what the writer wrote, if it is that record
            if writer.name == reader_name:
                return None
            raise SchemaResolutionError(f"writer {writer.name} is not {reader_name}, unknown locally")
        reader = self.catalog.entry(reader_name)
        if reader.fingerprint == writer.fingerprint:
            return None
        key = (writer.fingerprint, reader_name)
        if key not in self._resolution:
            # cold start: the check brings the avro library, which only a reader of an older writer needs
            from shared.avro.compat import incompatibilities

            # checked per schema pair, once: fastavro alone would notice only when a bad branch is read
            self._resolution[key] = incompatibilities(reader.json, writer.json)
        problems = self._resolution[key]
        if problems:
            raise SchemaResolutionError(f"{reader_name} cannot read {writer.name}: {'; '.join(problems)}")
        return reader.parsed
