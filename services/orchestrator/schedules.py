"""Schedules: the orchestrator fires every tick of every definition's schedule rule exactly once, across
replicas and restarts.

Exactly once is the run id's doing: a tick's run is ``schedule_run_id(definition, rule, tick)``, so any
replica that fires the same tick, at any time, produces a request for the same run, and the orchestrator
that owns that run id's partition answers a second one as the duplicate it is (``RunBook`` starts no second
run and publishes no second result for a run id it has seen; its memory of run ids is rebuilt from the
requests and events topics on every assignment). Who fires is only a matter of cost: the replica that owns
partition ``crc32(name) % partitions`` of the shared requests topic fires that definition's ticks, so in
steady state each tick is produced once and the work spreads over the replicas; during a rebalance two
replicas may both fire one tick, or none until the new owner's first tick check (then the missed-tick
policy applies), and neither loses or doubles a run.

Which ticks were fired survives restarts in the compacted schedules topic (``ScheduleState``, key
``<definition>#<rule>``): each fired tick's state record leaves in the same Kafka transaction as its request
(the loop's tick transaction), so the topic never claims a tick whose request was not written, and a new
owner reads every schedule's last tick from it. The retained requests could not serve for this: a monthly
schedule's last request is older than the topic's retention. Ticks fired here but not yet read back from
the topic are remembered locally, and forgotten on every (re)assignment and rollback, when the tick
transaction that carried them may have been aborted.

The clock is passed in (``fire`` is a pure function of the definitions, the last ticks and ``now``); the
service reads it as ``datetime.now(UTC) + schedule_clock_offset_s``, a knob tests use to reach a tick
without waiting for it.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from shared.contracts import (
    PipelineDefinition,
    PipelineRequest,
    ScheduleState,
    Trigger,
    TriggerKind,
    schedule_state_key,
)
from shared.kafka.topics import Topics
from shared.processing import Output
from shared.schedules import due_ticks, schedule_run_id
from shared.triggers import ScheduleTrigger

_log = logging.getLogger(__name__)

T_co = TypeVar("T_co", covariant=True)


class Snapshots(Protocol[T_co]):
    """What the scheduler reads of a compacted view (``shared.kafka.compacted.CompactedView``)."""

    def snapshot(self) -> Mapping[str, T_co]: ...


@dataclass(frozen=True)
class ScheduleRule:
    definition: PipelineDefinition
    index: int  # place among the definition's schedule rules
    trigger: ScheduleTrigger

    @property
    def key(self) -> str:
        return schedule_state_key(self.definition.name, self.index)


def schedule_rules(definitions: Mapping[str, PipelineDefinition]) -> Iterator[ScheduleRule]:
    for name in sorted(definitions):
        definition = definitions[name]
        schedules = [t for t in definition.triggers if isinstance(t, ScheduleTrigger)]
        for index, trigger in enumerate(schedules):
            yield ScheduleRule(definition, index, trigger)


def owner_partition(definition: str, partitions: int) -> int:
    """The requests partition whose owner fires ``definition``'s ticks (a stable hash: every replica
    computes the same owner from the same assignment)."""
    return zlib.crc32(definition.encode()) % max(partitions, 1)


def fire(
    definitions: Mapping[str, PipelineDefinition],
    last_ticks: Mapping[str, datetime],
    now: datetime,
    *,
    owns: Callable[[str], bool],
    grace_s: float,
    topic: Callable[[str], str] = str,
) -> list[Output]:
    """The requests (and their schedule states) of every tick due at ``now`` of the schedules this replica
    owns; ``last_ticks`` maps ``<definition>#<rule>`` to the last tick fired."""
    out: list[Output] = []
    for rule in schedule_rules(definitions):
        if not owns(rule.definition.name):
            continue
        trigger = rule.trigger
        try:
            ticks = due_ticks(
                trigger.cron,
                trigger.timezone,
                trigger.missed,
                trigger.max_catch_up,
                last_fired=last_ticks.get(rule.key),
                defined_at=rule.definition.updated_at,
                now=now,
                grace_s=grace_s,
            )
        except Exception as exc:  # validated when read; still, one bad rule must not stop every schedule
            _log.warning("schedule %s skipped: %s", rule.key, exc)
            continue
        for tick in ticks:
            request = tick_request(rule, tick, now)
            state = ScheduleState(
                definition=rule.definition.name,
                rule=rule.index,
                tick=tick,
                run_id=request.run_id,
                fired_at=now,
            )
            out.append(Output(topic(Topics.REQUESTS), request.run_id, request))
            out.append(Output(topic(Topics.SCHEDULES), rule.key, state))
    return out


def tick_request(rule: ScheduleRule, tick: datetime, now: datetime) -> PipelineRequest:
    name = rule.definition.name
    run_id = schedule_run_id(name, rule.index, tick)
    return PipelineRequest(
        run_id=run_id,
        request_id=run_id,  # one request per tick: a second firing is the same request
        submitted_at=now,
        requested_by=f"schedule:{name}#{rule.index}",
        tenant=rule.definition.tenant,  # the definition's: the run is its tenant's
        trigger=Trigger(
            kind=TriggerKind.SCHEDULE,
            source=f"{rule.trigger.cron} ({rule.trigger.timezone})",
            delivery_id=tick.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
        definition_name=name,
        parameters=dict(rule.trigger.parameters),
    )


class Scheduler:
    """The service's side of ``fire``: which schedules this replica owns (from its assignment), the last
    ticks (the schedules topic, plus what it fired itself since), and the clock."""

    def __init__(
        self,
        definitions: Snapshots[PipelineDefinition],
        states: Snapshots[ScheduleState],
        clock: Callable[[], datetime],
        *,
        grace_s: float,
        topic: Callable[[str], str] = str,
    ):
        self.definitions, self.states, self.clock = definitions, states, clock
        self.grace_s, self.topic = grace_s, topic
        self._owned: frozenset[int] = frozenset()
        self._partitions = 0
        self._count: Callable[[], int] | None = None
        self._fired_here: dict[str, datetime] = {}

    def assign(self, owned: set[int], partitions: int | Callable[[], int]) -> None:
        """The shared requests topic's partitions now owned, of ``partitions`` (or a call that counts them,
        made at the first tick and again at the next while it fails). What was fired but not read back
        yet is forgotten: its transaction may have been the one rolled back."""
        self._owned = frozenset(owned)
        self._partitions, self._count = (partitions, None) if isinstance(partitions, int) else (0, partitions)
        self._fired_here = {}

    def owns(self, definition: str) -> bool:
        return self._partitions > 0 and owner_partition(definition, self._partitions) in self._owned

    def due(self) -> list[Output]:
        if not self._owned:
            return []
        if self._count is not None:
            try:
                self._partitions, self._count = self._count(), None
            except Exception as exc:  # the broker did not answer: no schedule fires until it does
                _log.warning("schedules wait for the requests topic's partition count: %s", exc)
                return []
        last = {key: state.tick for key, state in self.states.snapshot().items()}
        for key, tick in self._fired_here.items():
            if key not in last or tick > last[key]:
                last[key] = tick
        out = fire(
            self.definitions.snapshot(),
            last,
            self.clock(),
            owns=self.owns,
            grace_s=self.grace_s,
            topic=self.topic,
        )
        for output in out:
            if isinstance(output.value, ScheduleState):
                self._fired_here[output.value.key] = output.value.tick
                _log.info(
                    "schedule %s: tick %s starts run %s",
                    output.value.key,
                    output.value.tick,
                    output.value.run_id,
                )
        return out
