"""The orchestrator's topic triggers never read an internal topic, even from a definition that was
produced straight to the definitions topic (so never checked by the gateway)."""

from __future__ import annotations

from typing import Any

import pytest

from services.orchestrator.topic_triggers import RuleKey, topic_rules
from shared.contracts import PipelineDefinition
from shared.policy import PolicySettings
from shared.spec import parse_spec
from shared.triggers import TopicTrigger

pytestmark = pytest.mark.unit


class Definitions:
    """What topic_rules reads of a CompactedView."""

    def __init__(self, *definitions: PipelineDefinition) -> None:
        self._by_name = {d.name: d for d in definitions}

    def snapshot(self) -> dict[str, PipelineDefinition]:
        return dict(self._by_name)


def definition(*topics: str) -> PipelineDefinition:
    spec = parse_spec(
        {"name": "p", "source": {"type": "event"}, "destination": {"type": "kafka", "topic": "o"}}
    )
    triggers: list[Any] = [TopicTrigger(topic=t) for t in topics]
    return PipelineDefinition(name="p", spec=spec, triggers=triggers, version=1, updated_by="x")


def test_a_trigger_on_an_internal_topic_is_skipped_and_the_others_keep_their_keys() -> None:
    rules = topic_rules(Definitions(definition("orders", "aoetl.requests", "payments")), PolicySettings())  # type: ignore[arg-type]
    assert {key: rule.topic for key, rule in rules.items()} == {
        RuleKey("p", 0): "orders",
        RuleKey("p", 2): "payments",
    }
