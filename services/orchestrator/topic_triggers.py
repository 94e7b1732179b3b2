"""Topic triggers: events on Kafka topics start registered pipelines, exactly once.

Why here: the orchestrator already holds every definition (a view of the definitions topic) and decides
what runs; the triggers only turn events into ``PipelineRequest``s, which it then handles like any other. A
supervisor thread keeps one ``TriggerRunner`` thread per topic rule of the current definitions (started,
restarted on change, stopped on removal). Each rule reads its topic in a consumer group of its own,
``aoetl-trigger.<definition>.<n>`` (n = the rule's place among the definition's topic rules): rules on the
same topic then keep independent offsets, so one rule's open window never holds back another's commits.
Replicas of the orchestrator share those groups, so Kafka spreads a rule's partitions over them.

Exactly once: a window closes at ``events`` events or ``seconds`` after its first event; its request
(run id derived from topic/partition/offset of the first event, delivery id the same coordinates) is
produced in ONE Kafka transaction with the group's offsets. The committed offset of a partition is the
first offset of its still-open window (or the next offset when none is open), so after a crash the window
is formed again from its first event and a committed one never is. A deterministic run id also makes the
orchestrator answer a zombie's duplicate as the same run.

Traced: a run continues the W3C trace of the event that started it (the ``traceparent`` / ``tracestate``
Kafka headers of the window's first event that carries them: ``shared.streaming.windows``), so the run's
spans are children of the producer's. The request is made in a PRODUCER span under that context (with
tracing off in this process, a no-op span that passes the producer's context on, as every hop does) whose
context its headers carry, in the same transaction; a window with no traced event starts a trace of its
own there. Only the trace context and our own baggage (the request's tenant and pipeline) are taken from
the event: a producer's baggage is dropped (``shared.tracing.propagation``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import streaming
from shared.contracts import DEFAULT_TENANT, PipelineDefinition, PipelineRequest, Stage, Trigger, TriggerKind
from shared.kafka.compacted import CompactedView
from shared.kafka.topics import Topics
from shared.kafka.transaction import transactional_id
from shared.kafka.types import Serde
from shared.policy.names import topic_problem
from shared.policy.settings import PolicySettings
from shared.settings import KafkaSettings
from shared.tracing import propagation, spans
from shared.triggers import TopicTrigger, parameters_from, topic_run_id, where_holds

_log = logging.getLogger(__name__)

# A window's request must fit the requests topic (broker default max.message.bytes is 1 MiB).
MAX_WINDOW_BYTES = 512 * 1024


@dataclass(frozen=True)
class RuleKey:
    definition: str
    index: int  # place among the definition's topic rules
    tenant: str = DEFAULT_TENANT  # the definition's: the runs it starts are that tenant's

    def group_id(self, suffix: str) -> str:
        return f"aoetl-trigger.{self.definition}.{self.index}{suffix}"


@dataclass(frozen=True)
class RunnerConfig:
    kafka: KafkaSettings
    instance_id: str
    topic_suffix: str
    session_timeout_ms: int
    transaction_timeout_ms: int
    commit_interval_s: float = 5.0
    kafka_timeout_s: float = 30.0  # bound on init/commit/abort calls, as in the task loop


class TriggerRunner(streaming.WindowedTopicReader[dict[str, Any]]):
    """Reads one rule's topic and publishes one request per closed window: a window holds the matching
    events of one partition, closed at ``window.events`` events, ``window.seconds`` after its first, or
    before the request outgrows ``MAX_WINDOW_BYTES``."""

    dead_letter_stage = Stage.ORCHESTRATE
    continues_trace = True

    def __init__(self, key: RuleKey, rule: TopicTrigger, config: RunnerConfig, serde: Serde):
        self.key, self.rule, self.config = key, rule, config
        reader = streaming.ReaderConfig(
            kafka=config.kafka,
            group_id=key.group_id(config.topic_suffix),
            transactional_id=transactional_id(
                "orchestrator-trigger",
                config.instance_id,
                key.definition,
                str(key.index),
                suffix=config.topic_suffix,
            ),
            topic=rule.topic,
            dead_letter_topic=Topics.DEAD_LETTERS + config.topic_suffix,
            consumer_overrides={
                "auto.offset.reset": rule.start_from.value,
                "session.timeout.ms": config.session_timeout_ms,
            },
            producer_overrides={"transaction.timeout.ms": config.transaction_timeout_ms},
            timeout=config.kafka_timeout_s,
            idle_commit_s=config.commit_interval_s,
        )
        limits = streaming.WindowLimits(
            items=rule.window.events, max_age_s=rule.window.seconds, max_bytes=MAX_WINDOW_BYTES
        )
        super().__init__(f"trigger-{key.definition}-{key.index}", reader, limits, rule.format, serde)
        self.requests_published = 0

    @property
    def tenant(self) -> str | None:
        """An unreadable event of the topic has no run: its dead letter is the definition's tenant's."""
        return self.key.tenant

    def keep(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return event if where_holds(self.rule.where, event) else None

    def outputs(
        self, closed: list[streaming.Window[dict[str, Any]]], reader: streaming.TransactionalReader
    ) -> list[streaming.Encoded]:
        return [self._request(window) for window in closed]

    def committed(self, closed: list[streaming.Window[dict[str, Any]]], dead_letters: int) -> None:
        self.requests_published += len(closed)
        for window in closed:
            _log.info(
                "trigger %s: %d event(s) from %s[%d]@%d start a run",
                self.key,
                len(window.items),
                self.rule.topic,
                window.partition,
                window.first_offset,
            )

    def _request(self, window: streaming.Window[dict[str, Any]]) -> streaming.Encoded:
        topic, definition = self.rule.topic, self.key.definition
        run_id = topic_run_id(definition, topic, window.partition, window.first_offset)
        request = PipelineRequest(
            run_id=run_id,
            requested_by=f"trigger:{topic}",
            tenant=self.key.tenant,
            trigger=Trigger(
                kind=TriggerKind.EVENT,
                source=topic,
                delivery_id=f"{topic}/{window.partition}/{window.first_offset}",
            ),
            definition_name=definition,
            parameters=parameters_from(self.rule.parameters, window.items[0]),
            payload=json.dumps(window.items, default=streaming.json_default, separators=(",", ":")).encode(),
        )
        requests = Topics.REQUESTS + self.config.topic_suffix
        parent = propagation.extract(window.trace) if window.trace else None
        with spans.producing(
            "orchestrate topic trigger", request, stage=Stage.ORCHESTRATE.value, topic=requests, parent=parent
        ) as headers:
            return (requests, run_id, self.serde.encode(request), headers)


def topic_rules(
    definitions: CompactedView[PipelineDefinition], policy: PolicySettings | None = None
) -> dict[RuleKey, TopicTrigger]:
    """The topic rules of the definitions; a rule on an internal topic is skipped (and logged): the gateway
    refuses such a definition, but one produced straight to the definitions topic was never checked."""
    rules: dict[RuleKey, TopicTrigger] = {}
    for name, definition in sorted(definitions.snapshot().items()):
        topic_triggers = [t for t in definition.triggers if isinstance(t, TopicTrigger)]
        for index, trigger in enumerate(topic_triggers):
            problem = policy and topic_problem(trigger.topic, policy.internal_topic_prefixes)
            if problem:
                _log.warning("definition %s: topic trigger %d ignored: %s", name, index, problem)
                continue
            rules[RuleKey(name, index, definition.tenant)] = trigger
    return rules


def topic_triggers(
    rules: Callable[[], dict[RuleKey, TopicTrigger]],
    config: RunnerConfig,
    serde: Serde,
    *,
    refresh_s: float = 1.0,
) -> streaming.WorkerSupervisor[RuleKey, TopicTrigger]:
    """One runner per topic rule of the current definitions: started, restarted when the rule changes,
    stopped when it is removed."""
    return streaming.WorkerSupervisor(
        "topic-triggers",
        rules,
        lambda key, rule: TriggerRunner(key, rule, config, serde),
        refresh_s=refresh_s,
        join_timeout_s=30.0,
    )
