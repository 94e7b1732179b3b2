"""pydantic models <-> fastavro datums.

In Avro a spec variant (``CsvSource``, ``FilterStep``, ``RangeRule``...) is a *record in a union*, and the
record's name says which branch it is, so the pydantic discriminator field (``type``/``op``/``rule``) is not
repeated inside the record. On write a variant becomes fastavro's tuple notation ``(full name, fields)``,
which picks the union branch by name instead of by trying each branch's shape (two variants with the same
fields, e.g. ``JsonlSource`` and ``ParquetSource``, would otherwise be ambiguous). On read
(``return_record_name=True``) the tuple is turned back into fields plus the discriminator.

A plugin's section (``shared.spec.plugins``) has no record of its own in the schemas, which only know the
built-in types: it travels as the envelope ``io.aoetl.spec.Plugin{Source,Step,Destination}``, its type and
its other fields as one JSON object, and on read becomes the plain section again, which the spec's
validation hands to the installed plugin's model.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from enum import Enum
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from shared.contracts import MESSAGE_TYPES
from shared.spec.models import PipelineSpec
from shared.spec.plugins import DISCRIMINATOR, PLUGIN_BASES

SPEC_NAMESPACE = "io.aoetl.spec"
DISCRIMINATOR_FIELDS = ("type", "op", "rule")
# envelope record name -> (plugin base, its discriminator field)
PLUGIN_ENVELOPES = {
    f"{SPEC_NAMESPACE}.{base.__name__}": (base, DISCRIMINATOR[kind]) for kind, base in PLUGIN_BASES.items()
}


def avro_name_of(model: type[BaseModel]) -> str:
    """Contracts name their record (``avro_name``); spec models are ``io.aoetl.spec.<ClassName>``."""
    name = getattr(model, "avro_name", None)
    return name if isinstance(name, str) else f"{SPEC_NAMESPACE}.{model.__name__}"


@cache  # per model class: called for every model in every record encoded or decoded (the hot path)
def discriminator_of(model: type[BaseModel]) -> tuple[str, str] | None:
    """``(field, value)`` of a union variant's literal tag, or None for an ordinary record."""
    for name in DISCRIMINATOR_FIELDS:
        info = model.model_fields.get(name)
        if info is not None and get_origin(info.annotation) is Literal:
            (value,) = get_args(info.annotation)
            return name, str(value)
    return None


# Values both conversions return as they are. Most of a record's fields are these, so they are passed
# without a call (the conversions ran once per field of every message: ~40% of encoding or decoding
# a spec-carrying record); exact types only, so an enum (a str subclass) still becomes its value.
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def to_datum(value: Any) -> Any:
    """A fastavro datum for a model (or any value inside one)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, BaseModel):
        model = type(value)
        envelope = _plugin_envelope_of(model)
        if envelope is not None:
            return _plugin_datum(value, *envelope)
        names, avro_name = _record_plan(model)
        record = {}
        for name in names:
            field = getattr(value, name)
            record[name] = field if type(field) in _PLAIN else to_datum(field)
        return (avro_name, record) if avro_name is not None else record
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else to_datum(v) for v in value]
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else to_datum(v) for k, v in value.items()}
    return value


def from_datum(value: Any) -> Any:
    """Plain data ready for ``model_validate``: tagged union branches get their discriminator back."""
    if isinstance(value, tuple):
        name, record = value
        if name in PLUGIN_ENVELOPES:
            field = PLUGIN_ENVELOPES[name][1]
            return {field: record[field], **json.loads(record["options"])}
        model = variants().get(name)
        if model is None:
            raise KeyError(f"record {name!r} is not a known union variant")
        field, tag = discriminator_of(model) or ("", "")
        return {field: tag, **from_datum(record)}
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else from_datum(v) for k, v in value.items()}
    if isinstance(value, list):
        return [v if type(v) in _PLAIN else from_datum(v) for v in value]
    return value


@cache
def _record_plan(model: type[BaseModel]) -> tuple[tuple[str, ...], str | None]:
    """A model's Avro fields (its discriminator left out) and, for a union variant, its record name."""
    tag = discriminator_of(model)
    skip = tag[0] if tag else None
    return tuple(n for n in model.model_fields if n != skip), avro_name_of(model) if tag else None


@cache  # per model class, like the record plan
def _plugin_envelope_of(model: type[BaseModel]) -> tuple[str, str] | None:
    """The envelope record name and discriminator field of a plugin's section, None for other models."""
    for name, (base, field) in PLUGIN_ENVELOPES.items():
        if issubclass(model, base):
            return name, field
    return None


def _plugin_datum(value: BaseModel, name: str, field: str) -> tuple[str, dict[str, str]]:
    options = value.model_dump(mode="json", exclude={field})
    return name, {field: getattr(value, field), "options": json.dumps(options, sort_keys=True)}


@cache
def variants() -> dict[str, type[BaseModel]]:
    """Every union-variant model reachable from the message types, by Avro full name."""
    return {avro_name_of(m): m for m in _reachable_models() if discriminator_of(m)}


def _reachable_models() -> Iterator[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [*MESSAGE_TYPES, PipelineSpec]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for info in model.model_fields.values():
            todo.extend(_models_in(info.annotation))


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if get_origin(annotation) in (Annotated, Union, types.UnionType, list, dict):
        for arg in get_args(annotation):
            yield from _models_in(arg)
