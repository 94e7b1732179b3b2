"""Trigger rules: what starts a registered pipeline, and with which parameters.

Three kinds, kept inside a ``PipelineDefinition`` (its ``triggers`` field) or, for webhooks, in the gateway's
settings too:

* ``WebhookTrigger``: a verified delivery to ``POST /webhooks/{source}`` of an event type (``*`` for any)
  whose payload satisfies ``where``; the gateway publishes the request.
* ``TopicTrigger``: events on a Kafka topic (JSON or Avro) that satisfy ``where``, one run per event or per
  window of ``events`` events / ``seconds`` seconds, whichever comes first; the orchestrator's topic
  trigger runners publish the request, exactly once (see ``services.orchestrator.topic_triggers``).
* ``ScheduleTrigger``: a cron expression in a time zone; the orchestrator fires each tick once, as the run
  ``schedule_run_id(definition, rule, tick)``, with the rule's fixed ``parameters`` (see
  ``shared.schedules`` for the tick arithmetic and missed-tick policies, ``services.orchestrator.schedules``
  for who fires). The expression and the zone are checked when the definition is read, so a definition
  with a bad one is refused with the field's path (``triggers[0].cron``).

``where`` maps dotted payload paths (``pull_request.number``; list items by index: ``commits.0.id``) to
the value they must equal (all must hold); ``parameters`` maps request parameters to dotted paths. Both
gateway and orchestrator import from here, so the two kinds of rule mean the same everywhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from shared.schedules import MissedTicks, cron_problem, timezone_problem
from shared.spec.loader import SpecError, SpecIssue
from shared.spec.models import PIPELINE_NAME, StreamFormat

ANY_EVENT = "*"
MISSING: Any = object()  # what dotted_get answers for an absent path (None is a value a payload may hold)
TRIGGERED_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.triggers.topic-event")

WhereValue = str | int | float | bool | None


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerStart(StrEnum):
    """Where a new topic trigger starts reading; later it always resumes from its committed offsets."""

    EARLIEST = "earliest"  # every event still retained on the topic
    LATEST = "latest"  # only events produced after the trigger first ran


class TriggerWindow(_Rule):
    """Events per run: a window closes at ``events`` events or ``seconds`` after its first event."""

    avro_name: ClassVar[str] = "io.aoetl.TriggerWindow"
    events: int = Field(1, ge=1, le=100_000, description="close the window at this many events")
    seconds: float | None = Field(
        None, gt=0, le=86_400, description="close the window this long after its first event"
    )


class WebhookTrigger(_Rule):
    avro_name: ClassVar[str] = "io.aoetl.WebhookTrigger"
    type: Literal["webhook"] = "webhook"
    source: str = Field(min_length=1, description="webhook source name (the {source} of /webhooks/{source})")
    event: str = Field(ANY_EVENT, description="event type (X-GitHub-Event, body 'type'...); '*' = any")
    where: dict[str, WhereValue] = Field(
        default_factory=dict, description="dotted payload path -> value it must equal (all must hold)"
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="request parameter -> dotted payload path it is taken from"
    )


class TopicTrigger(_Rule):
    avro_name: ClassVar[str] = "io.aoetl.TopicTrigger"
    type: Literal["topic"] = "topic"
    topic: str = Field(min_length=1, description="Kafka topic whose events start runs")
    format: StreamFormat = Field(StreamFormat.JSON, description="encoding of the topic's messages")
    where: dict[str, WhereValue] = Field(
        default_factory=dict, description="dotted event path -> value it must equal (all must hold)"
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="request parameter -> dotted path in the window's first event"
    )
    window: TriggerWindow = Field(default_factory=TriggerWindow, description="how many events make a run")
    start_from: TriggerStart = Field(TriggerStart.LATEST, description="where a new trigger starts reading")


class ScheduleTrigger(_Rule):
    avro_name: ClassVar[str] = "io.aoetl.ScheduleTrigger"
    type: Literal["schedule"] = "schedule"
    cron: str = Field(description="five-field cron expression, e.g. '*/5 * * * *'")
    timezone: str = Field("UTC", description="IANA time zone the expression is read in")
    missed: MissedTicks = Field(MissedTicks.LATEST, description="what happens to ticks nobody fired")
    max_catch_up: int = Field(10, ge=1, le=1000, description="missed 'all': at most this many missed ticks")
    parameters: dict[str, str] = Field(default_factory=dict, description="request parameters of each run")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        problem = timezone_problem(value)
        if problem:
            raise ValueError(problem)
        return value


DefinitionTrigger = Annotated[WebhookTrigger | TopicTrigger | ScheduleTrigger, Field(discriminator="type")]


class TriggerRule(WebhookTrigger):
    """A webhook rule in the gateway's settings, which names the definition it starts."""

    definition: str = Field(pattern=PIPELINE_NAME, description="registered pipeline definition to start")


@dataclass(frozen=True)
class Match:
    definition: str
    parameters: dict[str, str]


# --------------------------------------------------------------------------------------- matching
def dotted_get(document: Any, path: str) -> Any:
    """The value at ``path`` in nested dicts/lists, or ``MISSING``."""
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
            return MISSING
    return current


def as_parameter(value: Any) -> str:
    """Request parameters are strings: scalars as written, structures as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def where_holds(where: Mapping[str, Any], document: Any) -> bool:
    return all(dotted_get(document, path) == expected for path, expected in where.items())


def parameters_from(mapping: Mapping[str, str], document: Any) -> dict[str, str]:
    """A parameter whose path is absent from the document is left out (the definition's default applies)."""
    parameters = {}
    for name, path in mapping.items():
        value = dotted_get(document, path)
        if value is not MISSING:
            parameters[name] = as_parameter(value)
    return parameters


def match_rules(rules: Sequence[TriggerRule], source: str, event: str | None, payload: Any) -> list[Match]:
    """Every rule the delivery satisfies, in order, with its parameters filled in."""
    matches: list[Match] = []
    for rule in rules:
        if rule.source != source or (rule.event != ANY_EVENT and rule.event != event):
            continue
        if where_holds(rule.where, payload):
            matches.append(Match(rule.definition, parameters_from(rule.parameters, payload)))
    return matches


def webhook_rules_of(definitions: Iterable[Any]) -> list[TriggerRule]:
    """The webhook rules kept inside definitions, as settings-style rules naming their definition."""
    rules: list[TriggerRule] = []
    for definition in definitions:
        for trigger in getattr(definition, "triggers", ()):
            if isinstance(trigger, WebhookTrigger):
                rules.append(TriggerRule(**trigger.model_dump(), definition=definition.name))
    return rules


def topic_run_id(definition: str, topic: str, partition: int, offset: int) -> str:
    """The run a topic trigger starts for the window whose first event is at ``topic[partition]@offset``:
    deterministic, so a window formed again after a crash names the same run and starts no second one."""
    return uuid.uuid5(TRIGGERED_RUN_NAMESPACE, f"{definition}/{topic}/{partition}/{offset}").hex


# --------------------------------------------------------------------------- definition documents
_TRIGGERS: TypeAdapter[list[DefinitionTrigger]] = TypeAdapter(list[DefinitionTrigger])


def split_definition_document(data: Any) -> tuple[Any, list[DefinitionTrigger]]:
    """A definition document is a pipeline spec with an optional top-level ``triggers`` list beside its
    own keys (what ``aoetl definitions apply`` reads and ``PUT /definitions/{name}`` takes). Returns the
    spec part, still to be validated, and the parsed triggers; raises ``SpecError`` naming each bad field
    as ``triggers[i].field``."""
    if not isinstance(data, dict) or "triggers" not in data:
        return data, []
    spec = {k: v for k, v in data.items() if k != "triggers"}
    try:
        return spec, _TRIGGERS.validate_python(data["triggers"] or [])
    except ValidationError as exc:
        issues = [SpecIssue(f"triggers{_loc(e['loc'])}", e["msg"]) for e in exc.errors()]
        raise SpecError(issues) from exc


def _loc(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
