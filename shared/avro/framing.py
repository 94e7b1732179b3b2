"""How the writer schema is named in front of an Avro body.

``SingleObjectFraming`` is the Avro spec's single-object encoding (``C3 01`` + 8-byte little-endian
CRC-64-AVRO fingerprint): self-describing with no service at all, since every schema is also published on
the compacted schemas topic. ``RegistryFraming`` (in ``registry.py``) is Confluent's 5-byte framing for
deployments that run a Schema Registry.
"""

from __future__ import annotations

from typing import Protocol

from shared.avro.catalog import SchemaCatalog, SchemaEntry
from shared.avro.errors import NotSingleObjectError, TruncatedMessageError, UnknownFingerprintError

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


class Framing(Protocol):
    def header(self, entry: SchemaEntry) -> bytes:
        """Bytes to put before a body written with ``entry``."""
        ...

    def writer_of(self, data: bytes, expected: str | None = None) -> tuple[SchemaEntry, int]:
        """The writer schema named by the header of ``data`` and where the body starts; ``expected`` is
        the name the reader expects, a hint for the look-up (never a check)."""
        ...


class WriterSchemaSource(Protocol):
    """Somewhere else to find writer schemas by fingerprint (e.g. the schemas topic)."""

    def lookup(self, fingerprint: bytes) -> SchemaEntry | None: ...

    def refresh(self) -> None: ...


class SingleObjectFraming:
    def __init__(self, catalog: SchemaCatalog, resolver: WriterSchemaSource | None = None):
        self._catalog = catalog
        self.resolver = resolver

    def header(self, entry: SchemaEntry) -> bytes:
        return MAGIC + entry.fingerprint

    def writer_of(self, data: bytes, expected: str | None = None) -> tuple[SchemaEntry, int]:
        if not data or data[:2] != MAGIC[: len(data[:2])]:
            raise NotSingleObjectError(
                f"not an Avro single-object message (starts {bytes(data[:2]).hex()!r})"
            )
        if len(data) < HEADER_LEN:
            raise TruncatedMessageError(f"{len(data)} bytes, shorter than the {HEADER_LEN}-byte header")
        fingerprint = bytes(data[2:HEADER_LEN])
        entry = self._catalog.entry_by_fingerprint(fingerprint, expected) or self._remote(fingerprint)
        if entry is None:
            raise UnknownFingerprintError(f"unknown writer schema fingerprint {fingerprint.hex()}")
        return entry, HEADER_LEN

    def _remote(self, fingerprint: bytes) -> SchemaEntry | None:
        if self.resolver is None:
            return None
        entry = self.resolver.lookup(fingerprint)
        if entry is None:
            # a writer newer than our last look at the schemas topic: read it once more
            self.resolver.refresh()
            entry = self.resolver.lookup(fingerprint)
        return entry
