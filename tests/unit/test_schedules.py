"""Schedules without a clock: cron ticks in a time zone across DST, the missed-tick policies, definition-time
validation with field paths, and the orchestrator's firing fold (ownership, deterministic run ids, one
firing per tick across replicas and restarts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.orchestrator.runs import RunBook
from services.orchestrator.schedules import Scheduler, ScheduleRule, fire, owner_partition, tick_request
from shared.contracts import (
    PipelineDefinition,
    PipelineRequest,
    ScheduleState,
    TriggerKind,
    schedule_state_key,
)
from shared.kafka.topics import Topics
from shared.schedules import MissedTicks, due_ticks, next_tick, schedule_run_id
from shared.spec import SpecError, parse_spec
from shared.triggers import ScheduleTrigger, split_definition_document

pytestmark = pytest.mark.unit

PARIS = "Europe/Paris"
SPEC = {
    "name": "nightly",
    "source": {"type": "csv", "path": "/data/in.csv"},
    "destination": {"type": "jsonl", "path": "/data/out"},
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def due(cron: str, now: str, *, last: str | None = None, since: str = "2026-01-01T00:00:00+00:00",
        tz: str = "UTC", missed: MissedTicks = MissedTicks.LATEST, catch_up: int = 10,
        grace_s: float = 60) -> list[datetime]:  # fmt: skip
    return due_ticks(cron, tz, missed, catch_up, last_fired=at(last) if last else None, defined_at=at(since),
                     now=at(now), grace_s=grace_s)  # fmt: skip


# ----------------------------------------------------------------------------------- tick arithmetic
def test_a_tick_is_due_at_its_instant_and_not_before() -> None:
    assert due("*/5 * * * *", "2026-03-02T10:04:59+00:00", last="2026-03-02T10:00:00+00:00") == []
    assert due("*/5 * * * *", "2026-03-02T10:05:00+00:00", last="2026-03-02T10:00:00+00:00") == [
        at("2026-03-02T10:05:00+00:00")
    ]
    # fired: not due again
    assert due("*/5 * * * *", "2026-03-02T10:05:30+00:00", last="2026-03-02T10:05:00+00:00") == []


def test_a_new_schedule_does_not_fire_for_the_past() -> None:
    # defined at 10:07: the 10:05 tick is before it existed
    assert due("*/5 * * * *", "2026-03-02T10:08:00+00:00", since="2026-03-02T10:07:00+00:00") == []
    assert due("*/5 * * * *", "2026-03-02T10:10:01+00:00", since="2026-03-02T10:07:00+00:00") == [
        at("2026-03-02T10:10:00+00:00")
    ]


def test_missed_latest_fires_the_most_recent_missed_tick_once() -> None:
    # down from 10:02 to 10:17: 10:05, 10:10, 10:15 were missed
    assert due("*/5 * * * *", "2026-03-02T10:17:00+00:00", last="2026-03-02T10:00:00+00:00") == [
        at("2026-03-02T10:15:00+00:00")
    ]


def test_missed_all_catches_up_oldest_first_and_bounded() -> None:
    ticks = due("*/5 * * * *", "2026-03-02T10:17:00+00:00", last="2026-03-02T10:00:00+00:00",
                missed=MissedTicks.ALL)  # fmt: skip
    assert ticks == [at(f"2026-03-02T10:{m}:00+00:00") for m in ("05", "10", "15")]
    # a day down with a minutely schedule: only the 3 most recent
    bounded = due("* * * * *", "2026-03-03T10:00:30+00:00", last="2026-03-02T10:00:00+00:00",
                  missed=MissedTicks.ALL, catch_up=3)  # fmt: skip
    assert bounded == [at(f"2026-03-03T09:{m}:00+00:00") for m in ("58", "59")] + [
        at("2026-03-03T10:00:00+00:00")
    ]


def test_missed_skip_fires_only_on_time() -> None:
    on_time = due("*/5 * * * *", "2026-03-02T10:15:20+00:00", last="2026-03-02T10:00:00+00:00",
                  missed=MissedTicks.SKIP, grace_s=30)  # fmt: skip
    assert on_time == [at("2026-03-02T10:15:00+00:00")]
    late = due("*/5 * * * *", "2026-03-02T10:17:00+00:00", last="2026-03-02T10:00:00+00:00",
               missed=MissedTicks.SKIP, grace_s=30)  # fmt: skip
    assert late == []


def test_a_daily_time_skipped_by_spring_forward_fires_once_right_after_the_jump() -> None:
    # 2026-03-29 in Paris: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day
    ticks = due("30 2 * * *", "2026-03-31T12:00:00+00:00", last="2026-03-27T12:00:00+00:00", tz=PARIS,
                missed=MissedTicks.ALL)  # fmt: skip
    assert ticks == [
        at("2026-03-28T02:30:00+01:00"),
        at("2026-03-29T03:00:00+02:00"),  # once, at the first instant after the jump
        at("2026-03-30T02:30:00+02:00"),
        at("2026-03-31T02:30:00+02:00"),
    ]


def test_a_daily_time_repeated_by_fall_back_fires_once() -> None:
    # 2026-10-25 in Paris: 03:00 CEST becomes 02:00 CET; 02:30 happens twice on the wall clock
    ticks = due("30 2 * * *", "2026-10-26T12:00:00+00:00", last="2026-10-24T12:00:00+00:00", tz=PARIS,
                missed=MissedTicks.ALL)  # fmt: skip
    assert ticks == [at("2026-10-25T02:30:00+02:00"), at("2026-10-26T02:30:00+01:00")]


def test_a_sub_hourly_schedule_keeps_its_pace_through_the_repeated_hour() -> None:
    ticks = due("*/20 * * * *", "2026-10-25T02:10:00+00:00", last="2026-10-24T23:50:00+00:00", tz=PARIS,
                missed=MissedTicks.ALL, catch_up=100)  # fmt: skip
    # every 20 minutes of real time, both passes of 02:xx local included: no gap, no duplicate
    assert ticks == [at("2026-10-25T00:00:00+00:00") + timedelta(minutes=20 * i) for i in range(7)]
    assert len(set(ticks)) == len(ticks)


def test_next_tick_reads_the_expression_in_its_zone() -> None:
    assert next_tick("0 9 * * 1-5", PARIS, at("2026-07-03T08:00:00+00:00")) == at("2026-07-06T09:00:00+02:00")
    assert next_tick("0 9 * * 1-5", PARIS, at("2026-01-02T07:00:00+00:00")) == at("2026-01-02T09:00:00+01:00")


def test_the_run_of_a_tick_is_deterministic() -> None:
    tick = at("2026-03-02T10:05:00+00:00")
    assert schedule_run_id("nightly", 0, tick) == schedule_run_id("nightly", 0, tick.astimezone())
    assert len({schedule_run_id("nightly", 0, tick), schedule_run_id("nightly", 1, tick),
                schedule_run_id("other", 0, tick),
                schedule_run_id("nightly", 0, tick + timedelta(minutes=5))}) == 4  # fmt: skip


# ------------------------------------------------------------------------------- definition time
@pytest.mark.parametrize(
    ("trigger", "path", "reason"),
    [
        ({"type": "schedule", "cron": "61 * * * *"}, "triggers[0].schedule.cron", "invalid cron expression"),
        ({"type": "schedule", "cron": "* * * *"}, "triggers[0].schedule.cron", "five fields"),
        (
            {"type": "schedule", "cron": "* * * * *", "timezone": "Mars/Olympus"},
            "triggers[0].schedule.timezone",
            "unknown time zone",
        ),
        (
            {"type": "schedule", "cron": "* * * * *", "missed": "sometimes"},
            "triggers[0].schedule.missed",
            "latest",
        ),
        (
            {"type": "schedule", "cron": "* * * * *", "max_catch_up": 0},
            "triggers[0].schedule.max_catch_up",
            "1",
        ),
    ],
)
def test_a_bad_schedule_is_refused_with_its_field_path(
    trigger: dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(SpecError) as caught:
        split_definition_document({**SPEC, "triggers": [trigger]})
    (issue,) = caught.value.issues
    assert issue.path.startswith(path) and reason in issue.reason, issue


def test_a_schedule_is_read_with_its_defaults() -> None:
    _, (trigger,) = split_definition_document(
        {**SPEC, "triggers": [{"type": "schedule", "cron": "0 * * * *"}]}
    )
    assert trigger == ScheduleTrigger(cron="0 * * * *", timezone="UTC", missed=MissedTicks.LATEST)


# ------------------------------------------------------------------------------- the firing fold
def definition(name: str = "nightly", *triggers: ScheduleTrigger, since: str = "2026-03-02T09:00:00+00:00",
               tenant: str = "acme") -> PipelineDefinition:  # fmt: skip
    spec = parse_spec({**SPEC, "name": name})
    return PipelineDefinition(
        name=name, spec=spec, triggers=list(triggers), updated_at=at(since), tenant=tenant
    )


EVERY_5 = ScheduleTrigger(cron="*/5 * * * *", parameters={"region": "eu"})


def requests(outputs: list[Any]) -> list[PipelineRequest]:
    return [o.value for o in outputs if isinstance(o.value, PipelineRequest)]


def test_a_due_tick_is_one_request_and_its_state_keyed_by_run_id_and_rule() -> None:
    now = at("2026-03-02T10:05:01+00:00")
    out = fire({"nightly": definition("nightly", EVERY_5)}, {}, now, owns=lambda _: True, grace_s=60)
    request, state = (o.value for o in out)
    tick = at("2026-03-02T10:05:00+00:00")
    assert [(o.topic, o.key) for o in out] == [
        (Topics.REQUESTS, schedule_run_id("nightly", 0, tick)),
        (Topics.SCHEDULES, "nightly#0"),
    ]
    assert isinstance(request, PipelineRequest) and isinstance(state, ScheduleState)
    assert request.run_id == schedule_run_id("nightly", 0, tick) and request.definition_name == "nightly"
    assert (
        request.trigger.kind is TriggerKind.SCHEDULE and request.trigger.delivery_id == "2026-03-02T10:05:00Z"
    )
    assert (request.tenant, request.parameters) == ("acme", {"region": "eu"})
    assert (state.tick, state.run_id) == (tick, request.run_id)
    # the state says it was fired: not again
    assert fire({"nightly": definition("nightly", EVERY_5)}, {state.key: state.tick}, now,
                owns=lambda _: True, grace_s=60) == []  # fmt: skip


def test_only_the_owner_of_a_definition_fires_it_and_every_definition_has_one_owner() -> None:
    now = at("2026-03-02T10:05:01+00:00")
    defs = {f"d{i}": definition(f"d{i}", EVERY_5) for i in range(12)}
    replica_a, replica_b = {0, 1, 2}, {3, 4, 5}
    fired_a = requests(fire(defs, {}, now, owns=lambda n: owner_partition(n, 6) in replica_a, grace_s=60))
    fired_b = requests(fire(defs, {}, now, owns=lambda n: owner_partition(n, 6) in replica_b, grace_s=60))
    assert sorted(r.definition_name or "" for r in fired_a + fired_b) == sorted(defs)
    assert fired_a and fired_b  # the work is spread


class Snapshot:
    def __init__(self, values: dict[str, Any]):
        self.values = values

    def snapshot(self) -> dict[str, Any]:
        return dict(self.values)


def test_the_scheduler_remembers_its_own_firings_until_it_is_reassigned() -> None:
    clock = [at("2026-03-02T10:05:01+00:00")]
    states = Snapshot({})
    scheduler = Scheduler(Snapshot({"nightly": definition("nightly", EVERY_5)}), states, lambda: clock[0],
                          grace_s=60)  # fmt: skip
    assert scheduler.due() == []  # no partitions assigned yet: owns nothing
    scheduler.assign(set(range(6)), 6)
    first = scheduler.due()
    assert len(requests(first)) == 1
    assert scheduler.due() == []  # fired here, not read back from the topic yet
    scheduler.assign(set(range(6)), 6)  # a rollback or a rebalance: the firing may not have been committed
    assert requests(scheduler.due()) == requests(first)  # the same request again: same run id
    # committed and read back: a restarted scheduler knows the tick from the topic alone
    state = next(o.value for o in first if isinstance(o.value, ScheduleState))
    states.values[schedule_state_key("nightly", 0)] = state
    restarted = Scheduler(Snapshot({"nightly": definition("nightly", EVERY_5)}), states, lambda: clock[0],
                          grace_s=60)  # fmt: skip
    restarted.assign(set(range(6)), 6)
    assert restarted.due() == []
    clock[0] = at("2026-03-02T10:27:00+00:00")  # down across 10:10 ... 10:25: latest only
    (late,) = requests(restarted.due())
    assert late.run_id == schedule_run_id("nightly", 0, at("2026-03-02T10:25:00+00:00"))


def test_two_replicas_firing_one_tick_make_one_run() -> None:
    """During a rebalance two replicas may both fire a tick: the run id makes the second request a duplicate
    the run's owner answers with nothing (no second run, no second result)."""
    rule_definition = definition("nightly", EVERY_5)
    tick = at("2026-03-02T10:05:00+00:00")
    rule = ScheduleRule(rule_definition, 0, EVERY_5)
    first, second = tick_request(rule, tick, tick), tick_request(rule, tick, tick + timedelta(seconds=2))
    book = RunBook(lambda spec, payload: [], lambda spec, rows: [])
    accepted = book.on_request(first, rule_definition.spec, tick)
    assert accepted and book.on_request(second, rule_definition.spec, tick) == []
    assert book.reject(second.run_id, second.request_id, "nightly", [], tick) == []


# ------------------------------------------------------------------------------------------- the CLI
def test_definitions_list_shows_the_next_fire_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from aoetl.commands import definitions as command

    scheduled = definition("nightly", ScheduleTrigger(cron="0 3 * * *", timezone=PARIS))
    plain = definition("plain")
    monkeypatch.setattr(command, "AoetlClient", lambda: type("C", (), {"close": lambda self: None})())
    monkeypatch.setattr(command, "read_definitions", lambda client: {"nightly": scheduled, "plain": plain})
    now = datetime.now(UTC)
    expected = next_tick("0 3 * * *", PARIS, now)
    assert command.next_fire(scheduled, now) == expected and command.next_fire(plain, now) is None
    listed = CliRunner().invoke(command.app, ["list", "-o", "json"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.output)}
    assert rows["nightly"]["next_fire"] == expected.isoformat(timespec="seconds")
    assert rows["plain"]["next_fire"] is None
    table = CliRunner().invoke(command.app, ["list"], env={"COLUMNS": "200"})
    assert "next run" in table.output and expected.isoformat(timespec="seconds") in table.output
    assert "schedule 0 3 * * * (Europe/Paris)" in table.output


def test_the_scheduler_counts_the_partitions_lazily_and_retries_when_the_broker_is_silent() -> None:
    answers: list[int | Exception] = [TimeoutError("no answer"), 6]

    def count() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    defs = Snapshot({"nightly": definition("nightly", EVERY_5)})
    scheduler = Scheduler(defs, Snapshot({}), lambda: at("2026-03-02T10:05:01+00:00"), grace_s=60)
    scheduler.assign(set(range(6)), count)
    assert scheduler.due() == []  # no count yet: nothing fires, nothing is assumed
    assert len(requests(scheduler.due())) == 1 and answers == []


def test_one_rule_the_cron_library_refuses_does_not_stop_the_others() -> None:
    # built without validation, as a record from an older or foreign writer could be
    broken = ScheduleTrigger.model_construct(
        cron="0 0 31 2 *", timezone="UTC", missed=MissedTicks.LATEST, max_catch_up=10, parameters={}
    )
    defs = {"bad": definition("bad", broken), "good": definition("good", EVERY_5)}
    fired = requests(fire(defs, {}, at("2026-03-02T10:05:01+00:00"), owns=lambda _: True, grace_s=60))
    assert [r.definition_name for r in fired] == ["good"]
