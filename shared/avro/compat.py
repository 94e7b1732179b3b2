"""Schema evolution checks, BACKWARD_TRANSITIVE: the newest schema must read data written by every
earlier version (consumers upgrade first; old messages stay readable for as long as they are retained).

Not hand-written on purpose: Apache Avro's own Python package ships ``avro.compatibility``, a port of the
Java ``SchemaCompatibility`` that Confluent Schema Registry runs. It covers the resolution rules of the
Avro spec: a reader field missing from the writer needs a default, writer-only fields are ignored,
promotions int->long->float->double and string<->bytes, enum symbols the reader lacks (unless the reader
enum has a default), union branch matching, names of named types (or their aliases) and nested records.
``confluent_kafka`` only asks a live registry, and fastavro only finds a mismatch lazily while reading data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from shared.avro.errors import AvroError


class IncompatibleSchemaError(AvroError):
    """A schema change breaks readers' ability to read earlier data."""


def incompatibilities(reader: dict[str, Any] | str, writer: dict[str, Any] | str) -> list[str]:
    """Why ``reader`` cannot read everything ``writer`` may write; empty when it can.

    Give the reader with its defaults (not the Parsing Canonical Form, which strips them).
    """
    result = ReaderWriterCompatibilityChecker().get_compatibility(_parse(reader), _parse(writer))
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    # the library reports kinds, locations and messages as separate sets, so they are summarised together
    kinds = ", ".join(sorted({k.value for k in result.incompatibilities}))
    where = ", ".join(sorted(result.locations))
    return [f"{kinds} at {where}: {'; '.join(sorted(result.messages))}"]


def backward_transitive_violations(versions: Sequence[dict[str, Any] | str]) -> list[str]:
    """Problems of the newest version (last) reading each earlier one, as ``"v<N>: reason"``."""
    *older, newest = versions
    return [
        f"v{number}: {problem}"
        for number, writer in enumerate(older, start=1)
        for problem in incompatibilities(newest, writer)
    ]


def check_backward_transitive(name: str, versions: Sequence[dict[str, Any] | str]) -> None:
    problems = backward_transitive_violations(versions)
    if problems:
        raise IncompatibleSchemaError(f"{name}: the newest schema cannot read " + "; ".join(problems))


def _parse(schema: dict[str, Any] | str) -> avro.schema.Schema:
    return avro.schema.parse(schema if isinstance(schema, str) else json.dumps(schema))
