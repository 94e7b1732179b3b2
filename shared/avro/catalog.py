"""The schema catalog: every ``schemas/*.avsc`` loaded and parsed once, with fingerprints.

Each file defines exactly one named type (record or enum) and refers to other named types by full name, so
a type is written once and shared. For the wire every named type is *expanded* into a standalone schema
(each referenced type inlined at its first use, later uses by name), because a fingerprint must identify
the complete schema a writer used. ``schemas/history/<full name>/v<N>.avsc`` keeps earlier expanded
versions so messages from old writers still resolve by fingerprint.

Fingerprints are CRC-64-AVRO of the Parsing Canonical Form, as the 8 bytes that appear in the Avro
single-object header (little-endian); their hex form (``bytes.hex()``) keys the schemas topic.

Cold start: loading the catalog reads and expands the files, but parses, canonicalises and fingerprints a
schema only when it is first used (fastavro's CRC-64 is pure Python: all ~150 schemas cost ~0.3 CPU-s,
the two that ``aoetl submit`` writes a few ms). Looking a writer up by fingerprint with the name the reader
expects fingerprints that name's versions first (``aoetl run`` reads events and results: a few schemas);
only a writer of another name, a look-up without one, or listing every entry (publishing the catalog)
fingerprints them all, once per process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fingerprint_hex
from fastavro.schema import to_parsing_canonical_form
from fastavro.types import Schema

import shared
from shared.avro.errors import UnknownSchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def schemas_dir() -> Path:
    """``schemas/`` of the source checkout, else the copy that the wheel force-includes."""
    repo = Path(shared.__file__).resolve().parent.parent / "schemas"
    return repo if repo.is_dir() else Path(__file__).resolve().parent / "_schemas"


def fingerprint_of(canonical_form: str) -> bytes:
    return bytes.fromhex(_fingerprint_hex(canonical_form, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaEntry:
    """One complete (expanded) schema as a writer uses it. ``SchemaEntry(name, json)`` parses and
    fingerprints at first use (each derived value is computed once: immutable, so safe to share across
    threads); ``from_json`` does it at once."""

    name: str
    json: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, schema: dict[str, Any]) -> SchemaEntry:
        """An entry for a schema from outside the catalog (the schemas topic, a registry), parsed and
        fingerprinted now, so that a malformed one fails where it is read."""
        entry = cls(_fullname(schema, ""), schema)
        entry.fingerprint  # noqa: B018 (computed now for its check, and kept)
        return entry

    @cached_property
    def parsed(self) -> Schema:
        return parse_schema(self.json)

    @cached_property
    def canonical_form(self) -> str:
        return to_parsing_canonical_form(self.parsed)

    @cached_property
    def fingerprint(self) -> bytes:
        return fingerprint_of(self.canonical_form)

    def __repr__(self) -> str:
        return f"SchemaEntry(name={self.name!r}, fingerprint={self.fingerprint!r})"


class SchemaCatalog:
    """Current schemas by name, and current plus historical schemas by fingerprint."""

    def __init__(
        self, current: Iterable[SchemaEntry] = (), history: dict[str, list[SchemaEntry]] | None = None
    ):
        self._current = {e.name: e for e in current}
        self._history = history or {}
        self._fingerprint_index: dict[bytes, SchemaEntry] | None = None
        self._named_indexes: dict[str, dict[bytes, SchemaEntry]] = {}

    @property
    def _by_fp(self) -> dict[bytes, SchemaEntry]:
        """Every entry by fingerprint (a current schema wins over an equal historical one), built at the
        first look-up by fingerprint: the one step that fingerprints every schema. Two threads may both
        build it; they build the same index."""
        index = self._fingerprint_index
        if index is None:
            index = {e.fingerprint: e for versions in self._history.values() for e in versions}
            index.update((e.fingerprint, e) for e in self._current.values())
            self._fingerprint_index = index
        return index

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaCatalog:
        directory = directory or schemas_dir()
        named = {
            _fullname(s, ""): s for s in _read_schemas(sorted(directory.glob("*.avsc")), named_files=True)
        }
        current = [SchemaEntry(name, expand(name, named)) for name in sorted(named)]
        history: dict[str, list[SchemaEntry]] = {}
        for folder in sorted(p for p in (directory / "history").glob("*") if p.is_dir()):
            files = sorted(folder.glob("v*.avsc"), key=_version_number)
            history[folder.name] = [SchemaEntry(_fullname(s, ""), s) for s in _read_schemas(files)]
        return cls(current, history)

    @classmethod
    def default(cls) -> SchemaCatalog:
        """The project's schemas, loaded once per process."""
        return _default_catalog()

    def __contains__(self, name: object) -> bool:
        return name in self._current

    def names(self) -> list[str]:
        return sorted(self._current)

    def entry(self, name: str) -> SchemaEntry:
        try:
            return self._current[name]
        except KeyError:
            raise UnknownSchemaError(f"no schema named {name!r} in the catalog") from None

    def schema(self, name: str) -> Schema:
        """The parsed (fastavro) current schema of a named type."""
        return self.entry(name).parsed

    def fingerprint(self, name: str) -> bytes:
        return self.entry(name).fingerprint

    def by_fingerprint(self, fp: bytes) -> Schema | None:
        entry = self._by_fp.get(fp)
        return entry.parsed if entry else None

    def entry_by_fingerprint(self, fp: bytes, expected: str | None = None) -> SchemaEntry | None:
        """The entry of a writer's fingerprint. ``expected``: the name the reader expects, whose versions
        are looked at first, so a process that reads a few types fingerprints only those."""
        if expected is not None and self._fingerprint_index is None:
            # a writer of this code's own version is the common case: its one fingerprint first, before
            # fingerprinting every historical version (~25 ms for RunEvent's 11, at a reader's first event)
            current = self._current.get(expected)
            if current is not None and current.fingerprint == fp:
                return current
            entry = self._versions_by_fp(expected).get(fp)
            if entry is not None:
                return entry
        return self._by_fp.get(fp)

    def _versions_by_fp(self, name: str) -> dict[bytes, SchemaEntry]:
        """One name's historical and current entries by fingerprint (the current one wins, as in
        ``_by_fp``), built at its first look-up."""
        index = self._named_indexes.get(name)
        if index is None:
            index = {e.fingerprint: e for e in self._history.get(name, ())}
            current = self._current.get(name)
            if current is not None:
                index[current.fingerprint] = current
            self._named_indexes[name] = index
        return index

    def history(self, name: str) -> list[SchemaEntry]:
        """Earlier versions of a top-level schema, oldest first (the last one equals the current)."""
        return list(self._history.get(name, []))

    def history_names(self) -> list[str]:
        return sorted(self._history)

    def all_entries(self) -> Iterator[SchemaEntry]:
        """Every distinct schema a writer may have used: current and historical."""
        return iter(self._by_fp.values())


@cache
def _default_catalog() -> SchemaCatalog:
    return SchemaCatalog.load()


def expand(name: str, named: dict[str, Any]) -> dict[str, Any]:
    """A standalone schema for ``name``: referenced named types inlined at first use, by name after."""
    expanded = _inline(name, "", named, set())
    assert isinstance(expanded, dict)
    return expanded


def _inline(node: Any, namespace: str, named: dict[str, Any], seen: set[str]) -> Any:
    if isinstance(node, str):
        if node in PRIMITIVES:
            return node
        full = node if "." in node or not namespace else f"{namespace}.{node}"
        if full in seen:
            return full
        if full not in named:
            raise UnknownSchemaError(f"reference to unknown named type {full!r}")
        return _inline(named[full], namespace, named, seen)
    if isinstance(node, list):
        return [_inline(branch, namespace, named, seen) for branch in node]
    kind = node["type"]
    if kind in _NAMED_KINDS:
        full = _fullname(node, namespace)
        seen.add(full)
        if kind in ("record", "error"):
            inner = full.rpartition(".")[0]
            fields = [{**f, "type": _inline(f["type"], inner, named, seen)} for f in node["fields"]]
            return {**node, "fields": fields}
        return dict(node)
    if kind == "array":
        return {**node, "items": _inline(node["items"], namespace, named, seen)}
    if kind == "map":
        return {**node, "values": _inline(node["values"], namespace, named, seen)}
    if isinstance(kind, dict | list):
        return {**node, "type": _inline(kind, namespace, named, seen)}
    return dict(node)  # a primitive with attributes, e.g. a logical type


def _fullname(schema: dict[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _read_schemas(paths: Iterable[Path], *, named_files: bool = False) -> Iterator[dict[str, Any]]:
    for path in paths:
        schema = json.loads(path.read_text(encoding="utf-8"))
        if named_files:
            # a file must be named after the type it defines, so a reader of a reference finds it
            expected = f"{_fullname(schema, '')}.avsc"
            if path.name != expected:
                raise UnknownSchemaError(f"{path} defines {expected[:-5]!r}; name the file {expected}")
        yield schema


def _version_number(path: Path) -> int:
    match = _VERSION_FILE.match(path.name)
    if not match:
        raise UnknownSchemaError(f"history file {path} is not named v<N>.avsc")
    return int(match.group(1))
