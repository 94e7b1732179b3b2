"""Plugin spec sections: the base models a plugin's own models derive from, the markers by which a plugin
declares which of its fields the policy must check, and the annotation that lets installed plugin types
join the spec's discriminated unions at validation time.

Why at validation time and not by rebuilding the unions: every message model that carries a spec
(``PipelineRequest``, ``DataBatch``, ...) has the spec's validator built into its own, at import time, so a
rebuilt ``PipelineSpec`` would not reach them. Instead each union is wrapped: a section whose ``type``
(``op`` for steps) is built in goes to the built-in discriminated union exactly as before; any other is
looked up among the installed plugins (``shared.plugins``) and validated by the plugin's own model, its
errors located like a built-in's (``source.<type>.<field>``); a type that is neither is an error on the
discriminator field that lists what is available. So only installed plugins can be named in a spec.

A plugin model is a ``StrictModel`` (unknown keys are errors, instances frozen) subclassing
``PluginSource`` / ``PluginStep`` / ``PluginDestination`` and narrowing the discriminator to its one
literal type. On the wire (Avro) a plugin section is the envelope record ``io.aoetl.spec.Plugin*``: its
type and its other fields as one JSON object (``shared.avro.convert``), validated again on read by the
plugin model of the reading process.

Security: a spec section is hostile input even when the plugin is trusted. A plugin field that is a file
path, a URL, a SQL query, a Kafka topic or a connection name must be annotated with the matching
:class:`Checked` marker (``path: Annotated[str, Checked.INPUT_PATH]``) so ``shared.policy.check_spec``
applies the same rule it applies to the built-in fields of that kind (``shared.policy.plugins``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from shared.spec.base import StrictModel

PluginKind = Literal["source", "step", "destination"]


class Checked(StrEnum):
    """What a plugin field is, for the policy; put it in the field's ``Annotated`` metadata."""

    INPUT_PATH = "input_path"  # a file, file:// URL or glob read: inside the data roots
    OUTPUT_PATH = "output_path"  # a file or directory written: inside the data roots, never expanded
    URL = "url"  # an http(s) URL fetched: public addresses only (or the egress allow list)
    SQL = "sql"  # a PostgreSQL query run: exactly one read-only SELECT
    TOPIC = "topic"  # a Kafka topic read or written: never an internal one
    POSTGRES_CONNECTION = "postgres_connection"  # the name of a declared postgres connection
    HTTP_CONNECTION = "http_connection"  # the name of a declared http connection


class PluginSource(StrictModel):
    """Base of a plugin source's model: narrow ``type`` to ``Literal["<your type>"]``."""

    type: str


class PluginStep(StrictModel):
    """Base of a plugin transform step's model: narrow ``op`` to ``Literal["<your op>"]``."""

    op: str


class PluginDestination(StrictModel):
    """Base of a plugin destination's model: narrow ``type`` to ``Literal["<your type>"]``."""

    type: str


PLUGIN_BASES: dict[PluginKind, type[StrictModel]] = {
    "source": PluginSource,
    "step": PluginStep,
    "destination": PluginDestination,
}
DISCRIMINATOR: dict[PluginKind, str] = {"source": "type", "step": "op", "destination": "type"}


def literal_tag(model: type[BaseModel], field: str) -> str | None:
    """The one literal value of ``model``'s discriminator field, or None when it is not one literal."""
    info = model.model_fields.get(field)
    if info is None or get_origin(info.annotation) is not Literal:
        return None
    values = get_args(info.annotation)
    return str(values[0]) if len(values) == 1 else None


def _installed_models(kind: PluginKind) -> dict[str, type[BaseModel]]:
    from shared.plugins.registry import installed  # the registry imports the spec models: lazily

    return installed().models(kind)


def _load_failures(kind: PluginKind, tag: str) -> list[str]:
    from shared.plugins.registry import installed

    return [str(f) for f in installed().failures_of(kind, tag)]


class PluginUnion:
    """``Annotated[Builtins | PluginBase, PluginUnion(kind, Builtins)]``: the built-in discriminated union
    plus whatever plugin types are installed (see the module docstring). ``Builtins`` is the annotated
    built-in union (``Annotated[A | B, Field(discriminator=...)]``)."""

    def __init__(
        self,
        kind: PluginKind,
        builtins: Any,
        *,
        models: Callable[[], dict[str, type[BaseModel]]],
        failures: Callable[[str], list[str]] = lambda tag: [],
    ):
        """``models``: the installed plugin models by type; ``failures``: why a type's plugin, if any,
        could not be loaded (said when a spec names it)."""
        self.kind = kind
        self.field = DISCRIMINATOR[kind]
        self.builtins = builtins
        self._models = models
        self._failures = failures

    @classmethod
    def of(cls, kind: PluginKind, builtins: Any) -> PluginUnion:
        return cls(
            kind,
            builtins,
            models=lambda: _installed_models(kind),
            failures=lambda tag: _load_failures(kind, tag),
        )

    def builtin_tags(self) -> list[str]:
        union = get_args(self.builtins)[0]
        return [tag for m in get_args(union) if (tag := literal_tag(m, self.field)) is not None]

    def plugin_models(self) -> dict[str, type[BaseModel]]:
        return self._models()

    # -------------------------------------------------------------------------------- pydantic hooks
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        builtin_schema = handler.generate_schema(self.builtins)
        builtin_tags = frozenset(self.builtin_tags())
        base = PLUGIN_BASES[self.kind]

        def validate(value: Any, validate_builtin: core_schema.ValidatorFunctionWrapHandler) -> Any:
            if isinstance(value, base):
                value = value.model_dump()  # re-validated by the model installed *here*
            tag = value.get(self.field) if isinstance(value, dict) else getattr(value, self.field, None)
            if not isinstance(tag, str) or tag in builtin_tags:
                return validate_builtin(value)
            model = self.plugin_models().get(tag)
            if model is None:
                raise self._unknown(tag, builtin_tags, value)
            try:
                return model.model_validate(value)
            except ValidationError as exc:
                raise _located(exc, tag) from None

        def serialize(value: Any, serialize_builtin: core_schema.SerializerFunctionWrapHandler) -> Any:
            if isinstance(value, base):
                return value.model_dump(mode="json")
            return serialize_builtin(value)

        return core_schema.no_info_wrap_validator_function(
            validate,
            builtin_schema,
            serialization=core_schema.wrap_serializer_function_ser_schema(serialize, schema=builtin_schema),
        )

    def _unknown(self, tag: str, builtin_tags: Iterable[str], value: Any) -> ValidationError:
        installed = sorted(self.plugin_models())
        message = (
            f"unknown {self.kind} {self.field} {tag!r}: built in {sorted(builtin_tags)}, "
            f"installed plugins {installed or 'none'}"
        )
        failures = self._failures(tag)
        if failures:
            message += f" ({'; '.join(failures)})"
        detail: InitErrorDetails = {
            "type": PydanticCustomError("unknown_type", message),
            "loc": (self.field,),
            "input": tag,
        }
        return ValidationError.from_exception_data("unknown type", [detail])

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The built-in union's ``oneOf`` plus one branch per installed plugin model, in its mapping."""
        builtin = handler(schema)
        plugins = self.plugin_models()
        if not plugins:
            return builtin
        out = dict(handler.resolve_ref_schema(builtin)) if "$ref" in builtin else dict(builtin)
        branches = list(out.get("oneOf", []))
        mapping = dict(out.get("discriminator", {}).get("mapping", {}))
        for tag, model in sorted(plugins.items()):
            branch = handler(model.__pydantic_core_schema__)
            branches.append(branch)
            if "$ref" in branch:
                mapping[tag] = branch["$ref"]
        out["oneOf"] = branches
        if all("$ref" in branch for branch in branches):
            out["discriminator"] = {"propertyName": self.field, "mapping": mapping}
        else:  # an OpenAPI discriminator maps to $refs only; the branches' ``const`` tags still decide
            out.pop("discriminator", None)
        return out


def _located(exc: ValidationError, tag: str) -> ValidationError:
    """The plugin model's errors, each prefixed by the plugin type (as pydantic does for a built-in
    branch: ``source.csv.path``). A custom error without context is not formatted, so a message is
    carried as it is, braces included."""
    details: list[InitErrorDetails] = []
    for error in exc.errors():
        detail: InitErrorDetails = {
            "type": PydanticCustomError(error["type"], error["msg"]),
            "loc": (tag, *error["loc"]),
            "input": error.get("input"),
        }
        details.append(detail)
    return ValidationError.from_exception_data(exc.title, details)


def plugin_sections(spec: Any) -> Iterable[tuple[str, BaseModel]]:
    """``(field path, section)`` of every plugin section of a spec: its source, steps and destination."""
    if isinstance(spec.source, PluginSource):
        yield f"source.{spec.source.type}", spec.source
    for index, step in enumerate(spec.transforms):
        if isinstance(step, PluginStep):
            yield f"transforms[{index}].{step.op}", step
    if isinstance(spec.destination, PluginDestination):
        yield f"destination.{spec.destination.type}", spec.destination
