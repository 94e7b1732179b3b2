"""BACKWARD_TRANSITIVE: each real schema history passes, and each resolution rule catches what it must."""

from __future__ import annotations

from typing import Any

import pytest

from shared.avro.catalog import SchemaCatalog
from shared.avro.compat import (
    IncompatibleSchemaError,
    backward_transitive_violations,
    check_backward_transitive,
    incompatibilities,
)

pytestmark = pytest.mark.unit


def record(*fields: dict[str, Any], name: str = "t.R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "t.E", "symbols": list(symbols), **extra}


@pytest.mark.parametrize("name", SchemaCatalog.default().history_names())
def test_every_schema_history_is_backward_transitive(name: str) -> None:
    check_backward_transitive(name, [v.json for v in SchemaCatalog.default().history(name)])


COMPATIBLE = {
    "field added with default": (
        record(field("a", "int"), field("b", "string", default="")),
        record(field("a", "int")),
    ),
    "field removed": (record(field("a", "int")), record(field("a", "int"), field("b", "string"))),
    "int -> long": (record(field("a", "long")), record(field("a", "int"))),
    "long -> float": (record(field("a", "float")), record(field("a", "long"))),
    "float -> double": (record(field("a", "double")), record(field("a", "float"))),
    "string -> bytes": (record(field("a", "bytes")), record(field("a", "string"))),
    "bytes -> string": (record(field("a", "string")), record(field("a", "bytes"))),
    "enum symbol added": (record(field("e", enum("A", "B"))), record(field("e", enum("A")))),
    "enum symbol removed, reader default": (
        record(field("e", enum("A", default="A"))),
        record(field("e", enum("A", "B"))),
    ),
    "union branch added": (
        record(field("u", ["null", "int", "string"])),
        record(field("u", ["null", "int"])),
    ),
    "plain type widened into a union": (record(field("u", ["null", "string"])), record(field("u", "string"))),
    "record renamed with alias": (
        record(field("a", "int"), name="t.New", aliases=["t.R"]),
        record(field("a", "int")),
    ),
    "nested field added with default": (
        record(field("n", record(field("x", "int"), field("y", "int", default=0), name="t.N"))),
        record(field("n", record(field("x", "int"), name="t.N"))),
    ),
}

INCOMPATIBLE = {
    "field added without default": (
        record(field("a", "int"), field("b", "string")),
        record(field("a", "int")),
        "reader_field_missing_default_value",
    ),
    "long -> int": (record(field("a", "int")), record(field("a", "long")), "type_mismatch"),
    "double -> float": (record(field("a", "float")), record(field("a", "double")), "type_mismatch"),
    "string -> int": (record(field("a", "int")), record(field("a", "string")), "type_mismatch"),
    "enum symbol removed": (
        record(field("e", enum("A"))),
        record(field("e", enum("A", "B"))),
        "missing_enum_symbols",
    ),
    "union branch removed": (
        record(field("u", ["null", "int"])),
        record(field("u", ["null", "int", "string"])),
        "missing_union_branch",
    ),
    "union narrowed to a plain type": (
        record(field("u", "string")),
        record(field("u", ["null", "string"])),
        "type_mismatch",
    ),
    "record renamed": (record(field("a", "int"), name="t.New"), record(field("a", "int")), "name_mismatch"),
    "nested field added without default": (
        record(field("n", record(field("x", "int"), field("y", "int"), name="t.N"))),
        record(field("n", record(field("x", "int"), name="t.N"))),
        "reader_field_missing_default_value",
    ),
    "array item type narrowed": (
        record(field("a", {"type": "array", "items": "int"})),
        record(field("a", {"type": "array", "items": "long"})),
        "type_mismatch",
    ),
    "map value type changed": (
        record(field("m", {"type": "map", "values": "int"})),
        record(field("m", {"type": "map", "values": "string"})),
        "type_mismatch",
    ),
}


@pytest.mark.parametrize("case", COMPATIBLE)
def test_compatible_changes(case: str) -> None:
    reader, writer = COMPATIBLE[case]
    assert incompatibilities(reader, writer) == []


@pytest.mark.parametrize("case", INCOMPATIBLE)
def test_incompatible_changes(case: str) -> None:
    reader, writer, kind = INCOMPATIBLE[case]
    problems = incompatibilities(reader, writer)
    assert problems and kind in problems[0]


def test_transitive_catches_what_consecutive_checks_miss() -> None:
    v1 = record(field("f", "string"))
    v2 = record(field("g", "int", default=0))  # drops f: fine for v2 reading v1
    v3 = record(field("g", "int", default=0), field("f", "long", default=0))  # re-adds f with another type
    assert incompatibilities(v2, v1) == [] and incompatibilities(v3, v2) == []
    problems = backward_transitive_violations([v1, v2, v3])
    assert len(problems) == 1 and problems[0].startswith("v1: type_mismatch")
    with pytest.raises(IncompatibleSchemaError, match=r"t\.R"):
        check_backward_transitive("t.R", [v1, v2, v3])
