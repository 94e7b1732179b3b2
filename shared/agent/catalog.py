"""What a spec may say (the vocabulary shown to the model) and whether a draft keeps to it (grounding).

The vocabulary is read off the spec models and the connector registry, installed plugins included
(``shared.plugins``), so it cannot drift from what the services accept. Grounding is checked statically:
connectors from ``connector_catalog()``, and columns that exist in the source profile, by running
``TransformEngine.output_columns`` on the sampled schema and then checking every rule's and every
destination key's columns against the columns the steps produce.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from shared.agent.profile import SourceProfile
from shared.connectors import connector_catalog
from shared.errors import ConfigurationError
from shared.spec.models import DataType, Destination, PipelineSpec, TransformStep
from shared.spec.plugins import PLUGIN_BASES, PluginUnion
from shared.spec.quality import NotNullRule, QualityRule, RowCountRule, UniqueRule
from shared.transform.engine import TransformEngine


def union_members(annotated: Any) -> list[type[BaseModel]]:
    """The models of an ``Annotated[A | B | ..., Field(discriminator=...)]`` union; for a spec union that
    installed plugins join (``shared.spec.plugins.PluginUnion``), the built-in models then the plugins'."""
    union, *metadata = typing.get_args(annotated)
    models: list[type[BaseModel]] = []
    for member in typing.get_args(union):
        if typing.get_origin(member) is typing.Annotated:
            models.extend(union_members(member))  # the built-in union inside a plugin-aware one
        elif (
            isinstance(member, type) and issubclass(member, BaseModel) and member not in PLUGIN_BASES.values()
        ):
            models.append(member)
    for marker in metadata:
        if isinstance(marker, PluginUnion):
            models.extend(model for _, model in sorted(marker.plugin_models().items()))
    return models


def _tag(model: type[BaseModel], discriminator: str) -> str:
    return str(model.model_fields[discriminator].default)


def _fields(model: type[BaseModel], skip: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        if name == skip:
            continue
        required = "required" if info.is_required() else "optional"
        out[name] = f"{info.description} ({required})" if info.description else f"({required})"
    return out


def spec_vocabulary() -> dict[str, Any]:
    """Everything a drafted spec may use, for the model's prompt and the ``list_connectors`` tool."""
    return {
        "sources": {
            name: {"description": info.description, "options": info.options}
            for name, info in connector_catalog().items()
        },
        "destinations": {_tag(m, "type"): _fields(m, "type") for m in union_members(Destination)},
        "transform_ops": {_tag(m, "op"): _fields(m, "op") for m in union_members(TransformStep)},
        "quality_rules": {_tag(m, "rule"): _fields(m, "rule") for m in union_members(QualityRule)},
        "data_types": [t.value for t in DataType],
        "on_fail": ["fail", "quarantine", "warn"],
    }


def rule_columns(rule: Any) -> list[str]:
    if isinstance(rule, RowCountRule):
        return []
    if isinstance(rule, NotNullRule | UniqueRule):
        return list(rule.columns)
    return [rule.column]


def check_connector(spec: PipelineSpec) -> list[str]:
    """The source must be readable by one of our connectors (the spec models also allow ``kafka``, which
    the streaming path consumes and no connector plans)."""
    catalog = connector_catalog()
    if spec.source.type in catalog:
        return []
    return [f"source.type: {spec.source.type!r} is not an available connector; use one of {sorted(catalog)}"]


def check_grounding(spec: PipelineSpec, profile: SourceProfile | None) -> list[str]:
    """Every reason the spec is not grounded in the catalog and the profile; [] when it is."""
    reasons = check_connector(spec)
    if reasons:
        return reasons
    if profile is None:
        return ["source: it was not profiled; call profile_source on it first"]
    columns: Any = profile.sample.schema if profile.has_sample else profile.column_names
    try:
        with TransformEngine(spec.transforms) as engine:
            produced = engine.output_columns(columns)
    except ConfigurationError as exc:
        return [f"{exc} (source columns: {', '.join(profile.column_names)})"]
    available = set(produced)
    listing = ", ".join(produced)
    for index, rule in enumerate(spec.quality):
        for name in rule_columns(rule):
            if name not in available:
                reasons.append(
                    f"quality[{index}] ({rule.rule}): unknown column {name!r}; "
                    f"columns after the transforms: {listing}"
                )
    for name in getattr(spec.destination, "keys", []):
        if name not in available:
            reasons.append(
                f"destination.keys: unknown column {name!r}; columns after the transforms: {listing}"
            )
    return reasons
