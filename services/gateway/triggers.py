"""Trigger rules: which webhook deliveries start which registered pipeline, with which parameters.

A rule names a source and an event type (``*`` for any), optionally requires payload fields to equal
given values, and maps request parameters to payload fields by dotted path (``pull_request.number``;
list items by index: ``commits.0.id``). Every matching rule starts one run, so one delivery may start
several pipelines.

The rules live in the gateway's settings (env or config file), not in ``PipelineDefinition``: keeping them
next to each definition needs a ``triggers`` field in the ``io.aoetl.PipelineDefinition`` schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.spec.models import PIPELINE_NAME

ANY_EVENT = "*"
_MISSING = object()


class TriggerRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, description="webhook source name (the {source} of /webhooks/{source})")
    event: str = Field(ANY_EVENT, description="event type (X-GitHub-Event, body 'type'...); '*' = any")
    definition: str = Field(pattern=PIPELINE_NAME, description="registered pipeline definition to start")
    where: dict[str, Any] = Field(
        default_factory=dict, description="dotted payload path -> value it must equal (all must hold)"
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="request parameter -> dotted payload path it is taken from"
    )


@dataclass(frozen=True)
class Match:
    rule: TriggerRule
    parameters: dict[str, str]


def dotted_get(document: Any, path: str) -> Any:
    """The value at ``path`` in nested dicts/lists, or ``_MISSING``."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif (
            isinstance(current, list)
            and part.lstrip("-").isdigit()
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def as_parameter(value: Any) -> str:
    """Request parameters are strings: scalars as written, structures as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def match_rules(rules: Sequence[TriggerRule], source: str, event: str | None, payload: Any) -> list[Match]:
    """Every rule the delivery satisfies, in configuration order, with its parameters filled in. A
    parameter whose path is absent from the payload is left out (the definition's default applies)."""
    matches: list[Match] = []
    for rule in rules:
        if rule.source != source or (rule.event != ANY_EVENT and rule.event != event):
            continue
        if any(dotted_get(payload, path) != expected for path, expected in rule.where.items()):
            continue
        parameters = {}
        for name, path in rule.parameters.items():
            value = dotted_get(payload, path)
            if value is not _MISSING:
                parameters[name] = as_parameter(value)
        matches.append(Match(rule, parameters))
    return matches
