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
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from shared.contracts import (
    DeadLetter,
    ErrorInfo,
    Origin,
    PipelineDefinition,
    PipelineRequest,
    Stage,
    Trigger,
    TriggerKind,
)
from shared.kafka.compacted import CompactedView
from shared.kafka.topics import Topics
from shared.kafka.types import Serde
from shared.settings import KafkaSettings
from shared.streaming import (
    TP,
    Encoded,
    GroupTransactor,
    RestartingWorker,
    StreamDecodeError,
    coordinates,
    decode_event,
    json_default,
)
from shared.triggers import TopicTrigger, parameters_from, topic_run_id, where_holds

_log = logging.getLogger(__name__)

# A window's request must fit the requests topic (broker default max.message.bytes is 1 MiB).
MAX_WINDOW_BYTES = 512 * 1024


@dataclass(frozen=True)
class RuleKey:
    definition: str
    index: int  # place among the definition's topic rules

    def group_id(self, suffix: str) -> str:
        return f"aoetl-trigger.{self.definition}.{self.index}{suffix}"


@dataclass
class Window:
    partition: int
    first_offset: int
    opened_at: float
    events: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0


@dataclass
class _Partition:
    base: int  # everything from here on is consumed but not committed
    position: int  # next offset to consume
    window: Window | None = None


class WindowBook:
    """The windows of one rule, per partition, and the offsets it may commit. No I/O, clock passed in."""

    def __init__(self, rule: TopicTrigger, max_bytes: int = MAX_WINDOW_BYTES):
        self.rule = rule
        self._max_bytes = max_bytes
        self._parts: dict[TP, _Partition] = {}
        self.closed: list[Window] = []

    def add(self, tp: TP, offset: int, event: dict[str, Any] | None, size: int, now: float) -> None:
        """One consumed record: ``event`` None for one that does not match (or could not be read)."""
        part = self._parts.setdefault(tp, _Partition(base=offset, position=offset))
        part.position = offset + 1
        if event is None:
            return
        if part.window is None:
            part.window = Window(tp[1], offset, now)
        window = part.window
        window.events.append(event)
        window.size += size
        if len(window.events) >= self.rule.window.events or window.size >= self._max_bytes:
            self.closed.append(window)
            part.window = None

    def close_due(self, now: float) -> None:
        seconds = self.rule.window.seconds
        if seconds is None:
            return
        for part in self._parts.values():
            if part.window is not None and now - part.window.opened_at >= seconds:
                self.closed.append(part.window)
                part.window = None

    def next_due(self) -> float | None:
        """When the oldest open window times out (monotonic seconds), if any."""
        seconds = self.rule.window.seconds
        opened = [p.window.opened_at for p in self._parts.values() if p.window is not None]
        return min(opened) + seconds if seconds is not None and opened else None

    def offsets(self) -> dict[TP, int]:
        """Per partition, what may be committed: an open window's first event is not."""
        return {
            tp: part.window.first_offset if part.window is not None else part.position
            for tp, part in self._parts.items()
        }

    def uncommitted(self) -> bool:
        return bool(self.closed) or any(o > self._parts[tp].base for tp, o in self.offsets().items())

    def held(self) -> dict[TP, int]:
        return {tp: part.base for tp, part in self._parts.items()}

    def committed(self, offsets: dict[TP, int]) -> None:
        self.closed = []
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].base = offset

    def forget(self, tps: set[TP] | None = None) -> None:
        """After a rewind or a revocation: what was held is consumed again (or by the new owner)."""
        if tps is None:
            self._parts.clear()
            self.closed = []
            return
        for tp in tps:
            self._parts.pop(tp, None)
        self.closed = [w for w in self.closed if (self.rule.topic, w.partition) not in tps]


@dataclass(frozen=True)
class RunnerConfig:
    kafka: KafkaSettings
    instance_id: str
    topic_suffix: str
    session_timeout_ms: int
    transaction_timeout_ms: int
    commit_interval_s: float = 5.0


class TriggerRunner(RestartingWorker):
    """Reads one rule's topic and publishes one request per closed window."""

    def __init__(self, key: RuleKey, rule: TopicTrigger, config: RunnerConfig, serde: Serde):
        super().__init__(f"trigger-{key.definition}-{key.index}")
        self.key, self.rule, self.config, self.serde = key, rule, config, serde
        self.book = WindowBook(rule)
        self._dead_letters: list[Encoded] = []
        self.requests_published = 0

    def _reset(self) -> None:
        self.book.forget()
        self._dead_letters = []

    def _serve(self) -> None:
        c = self.config
        transactor = GroupTransactor(
            c.kafka,
            group_id=self.key.group_id(c.topic_suffix),
            transactional_id=_safe(
                f"orchestrator-trigger-{c.instance_id}-{self.key.definition}-{self.key.index}"
            ),
            topics=[self.rule.topic],
            stop=self._stop,
            consumer_overrides={
                "auto.offset.reset": self.rule.start_from.value,
                "session.timeout.ms": c.session_timeout_ms,
            },
            producer_overrides={"transaction.timeout.ms": c.transaction_timeout_ms},
            on_revoke=lambda parts: self.book.forget({(p.topic, p.partition) for p in parts}),
        )
        transactor.open()
        _log.info("topic trigger %s follows %s", self.key, self.rule.topic)
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                due = self.book.next_due()
                wait = 0.5 if due is None else max(0.0, min(0.5, due - time.monotonic()))
                for message in transactor.poll(500, wait):
                    self._take(message)
                now = time.monotonic()
                self.book.close_due(now)
                if (
                    self.book.closed
                    or self._dead_letters
                    or (now - last_commit >= c.commit_interval_s and self.book.uncommitted())
                ):
                    self._commit(transactor)
                    last_commit = now
        finally:
            transactor.close()

    def _take(self, message: Message) -> None:
        topic, partition, offset = coordinates(message)
        raw = message.value()
        try:
            event = decode_event(raw, self.rule.format, self.serde)
        except StreamDecodeError as exc:
            self._dead_letters.append(self._dead_letter(message, exc))
            self.book.add((topic, partition), offset, None, 0, time.monotonic())
            return
        matched = event if where_holds(self.rule.where, event) else None
        self.book.add((topic, partition), offset, matched, len(raw or b""), time.monotonic())

    def _commit(self, transactor: GroupTransactor) -> None:
        outputs = [self._request(w) for w in self.book.closed] + self._dead_letters
        offsets = self.book.offsets()
        if transactor.commit(outputs, offsets, self.book.held()):
            self.requests_published += len(self.book.closed)
            for window in self.book.closed:
                _log.info(
                    "trigger %s: %d event(s) from %s[%d]@%d start a run",
                    self.key,
                    len(window.events),
                    self.rule.topic,
                    window.partition,
                    window.first_offset,
                )
            self.book.committed(offsets)
        else:
            self.book.forget()
        self._dead_letters = []

    def _request(self, window: Window) -> Encoded:
        topic, definition = self.rule.topic, self.key.definition
        run_id = topic_run_id(definition, topic, window.partition, window.first_offset)
        request = PipelineRequest(
            run_id=run_id,
            requested_by=f"trigger:{topic}",
            trigger=Trigger(
                kind=TriggerKind.EVENT,
                source=topic,
                delivery_id=f"{topic}/{window.partition}/{window.first_offset}",
            ),
            definition_name=definition,
            parameters=parameters_from(self.rule.parameters, window.events[0]),
            payload=json.dumps(window.events, default=json_default, separators=(",", ":")).encode(),
        )
        return (Topics.REQUESTS + self.config.topic_suffix, run_id, self.serde.encode(request))

    def _dead_letter(self, message: Message, exc: Exception) -> Encoded:
        topic, partition, offset = coordinates(message)
        letter = DeadLetter(
            origin=Origin(topic=topic, partition=partition, offset=offset, key=message.key()),
            stage=Stage.ORCHESTRATE,
            error=ErrorInfo.from_exception(exc),
            payload=message.value() or b"",
        )
        return (Topics.DEAD_LETTERS + self.config.topic_suffix, message.key(), self.serde.encode(letter))


def topic_rules(definitions: CompactedView[PipelineDefinition]) -> dict[RuleKey, TopicTrigger]:
    rules: dict[RuleKey, TopicTrigger] = {}
    for name, definition in sorted(definitions.snapshot().items()):
        topic_triggers = [t for t in definition.triggers if isinstance(t, TopicTrigger)]
        for index, trigger in enumerate(topic_triggers):
            rules[RuleKey(name, index)] = trigger
    return rules


class TopicTriggers:
    """Keeps one runner per topic rule of the current definitions."""

    def __init__(
        self,
        rules: Callable[[], dict[RuleKey, TopicTrigger]],
        config: RunnerConfig,
        serde: Serde,
        *,
        refresh_s: float = 1.0,
    ):
        self._rules, self._config, self._serde, self._refresh_s = rules, config, serde, refresh_s
        self.runners: dict[RuleKey, TriggerRunner] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="topic-triggers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _supervise(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._reconcile(self._rules())
                except Exception:
                    _log.exception("topic triggers could not be reconciled")
                self._stop.wait(self._refresh_s)
        finally:
            self._reconcile({})

    def _reconcile(self, desired: dict[RuleKey, TopicTrigger]) -> None:
        stale = [k for k, r in self.runners.items() if desired.get(k) != r.rule]
        for key in stale:
            self.runners[key].stop()
        for key in stale:
            self.runners.pop(key).join(30)
        for key, rule in desired.items():
            if key not in self.runners:
                runner = TriggerRunner(key, rule, self._config, self._serde)
                runner.start()
                self.runners[key] = runner


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
