"""Confluent Schema Registry framing: magic byte ``0`` + 4-byte big-endian schema id + Avro body.

Used only when ``AOETL_SCHEMA_REGISTRY_URL`` is set, for consumers that expect Confluent's wire format.
Subjects follow the RecordNameStrategy (subject = record full name) because one serde serves every topic.
Schemas are registered on first encode and fetched by id on decode; both are cached per process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

# the HTTP library the registry client really uses (httpx2, or httpx on old Pythons)
from confluent_kafka.schema_registry.common._httpx_compat import httpx

from shared.avro.catalog import SchemaEntry
from shared.avro.compat import IncompatibleSchemaError
from shared.avro.errors import (
    AvroError,
    NotSingleObjectError,
    SchemaSourceUnavailableError,
    TruncatedMessageError,
    UnknownFingerprintError,
)

T = TypeVar("T")
MAGIC = b"\x00"
HEADER_LEN = 5


class RegistryFraming:
    def __init__(self, client: SchemaRegistryClient):
        self._client = client
        self._ids: dict[bytes, int] = {}
        self._by_id: dict[int, SchemaEntry] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> RegistryFraming:
        """``mock://...`` gives confluent_kafka's in-memory registry (tests)."""
        return cls(SchemaRegistryClient.new_client({"url": url}))

    def header(self, entry: SchemaEntry) -> bytes:
        schema_id = self._ids.get(entry.fingerprint)
        if schema_id is None:
            schema = Schema(json.dumps(entry.json), "AVRO")
            schema_id = _call(lambda: self._client.register_schema(entry.name, schema), entry.name)
            with self._lock:
                self._ids[entry.fingerprint] = schema_id
                self._by_id.setdefault(schema_id, entry)
        return MAGIC + schema_id.to_bytes(4, "big")

    def writer_of(self, data: bytes, expected: str | None = None) -> tuple[SchemaEntry, int]:
        if not data or data[:1] != MAGIC:
            raise NotSingleObjectError(
                f"not a Schema Registry framed message (starts {bytes(data[:1]).hex()!r})"
            )
        if len(data) < HEADER_LEN:
            raise TruncatedMessageError(f"{len(data)} bytes, shorter than the {HEADER_LEN}-byte header")
        schema_id = int.from_bytes(data[1:HEADER_LEN], "big")
        entry = self._by_id.get(schema_id)
        if entry is None:
            schema = _call(lambda: self._client.get_schema(schema_id), f"schema id {schema_id}")
            entry = SchemaEntry.from_json(json.loads(schema.schema_str or "null"))
            with self._lock:
                self._by_id[schema_id] = entry
        return entry, HEADER_LEN


def _call(request: Callable[[], T], what: str) -> T:
    """Registry errors by kind: missing -> unknown writer, conflict -> incompatible, else retry later."""
    try:
        return request()
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            raise UnknownFingerprintError(f"{what}: not in the Schema Registry") from exc
        if exc.http_status_code == 409:
            raise IncompatibleSchemaError(f"{what}: rejected by the Schema Registry: {exc}") from exc
        if exc.http_status_code in (400, 401, 403, 422):
            raise AvroError(f"{what}: Schema Registry refused the request: {exc}") from exc
        raise SchemaSourceUnavailableError(f"{what}: Schema Registry error: {exc}") from exc
    except (httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise SchemaSourceUnavailableError(f"{what}: Schema Registry unreachable: {exc}") from exc
