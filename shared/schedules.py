"""Cron schedules as pure functions of the clock: which ticks a schedule trigger has due, and when it fires
next. Nothing here reads the clock or does I/O: the orchestrator's scheduler (and the CLI's next-fire
column) pass ``now`` in, so every branch (DST transitions, missed-tick policies) is unit-tested without
waiting.

The cron arithmetic is cronsim's (the evaluator healthchecks.io runs): five-field expressions, evaluated in
the schedule's IANA time zone (``zoneinfo``), with cron's DST rules: a wall-clock time skipped by a
spring-forward jump fires once at the first instant after the jump, a time repeated by a fall-back fires
once (its first occurrence), and a schedule finer than an hour ("*/20 * * * *") keeps firing through both
passes of a repeated hour, as real time goes on. A tick is an instant; this module hands ticks out in UTC.

Missed ticks (the orchestrator was down, or the owner of a schedule changed, across ticks):

* ``latest`` (default): only the most recent due tick fires, once; the ones before it are dropped.
* ``all``: every due tick fires, oldest first, at most ``max_catch_up`` of the most recent ones (bounded,
  so a long outage of a minutely schedule does not flood the system).
* ``skip``: a tick fires only on time (within ``grace_s`` of its instant); a late one is dropped.

A tick is due when it is after the schedule's last fired tick (or, before its first, after the moment it
was defined: a new schedule does not fire for the past) and not after ``now``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

SCHEDULED_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.triggers.schedule-tick")
# cron has minute resolution; cronsim answers whole seconds. One second past ``now`` makes "not after now"
# inclusive when iterating backwards (cronsim's start is exclusive).
_RESOLUTION = timedelta(seconds=1)


class MissedTicks(StrEnum):
    """What a schedule does with ticks that passed while nobody fired them."""

    LATEST = "latest"  # fire the most recent missed tick once
    ALL = "all"  # fire each missed tick, at most max_catch_up of them
    SKIP = "skip"  # fire only on time


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a five-field cron expression cronsim evaluates (None: it is)."""
    if len(expression.split()) != 5:
        return "a cron expression has five fields: minute hour day-of-month month day-of-week"
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        return f"invalid cron expression: {exc}"
    return None


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone (None: it is)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (an IANA name such as 'Europe/Paris' or 'UTC')"
    return None


def next_tick(cron: str, timezone: str, after: datetime) -> datetime:
    """The first tick strictly after ``after``, in UTC."""
    zone = ZoneInfo(timezone)
    return next(iter(CronSim(cron, after.astimezone(zone)))).astimezone(UTC)


def _ticks_back(cron: str, timezone: str, now: datetime, lower: datetime, limit: int) -> list[datetime]:
    """Up to ``limit`` ticks in (lower, now], most recent first."""
    zone = ZoneInfo(timezone)
    start = (now + _RESOLUTION).replace(microsecond=0).astimezone(zone)
    ticks: list[datetime] = []
    for tick in CronSim(cron, start, reverse=True):
        instant = tick.astimezone(UTC)
        if instant <= lower or len(ticks) >= limit:
            break
        if instant <= now:
            ticks.append(instant)
    return ticks


def due_ticks(
    cron: str,
    timezone: str,
    missed: MissedTicks,
    max_catch_up: int,
    *,
    last_fired: datetime | None,
    defined_at: datetime,
    now: datetime,
    grace_s: float,
) -> list[datetime]:
    """The ticks to fire at ``now``, oldest first (see the module docstring for the policies)."""
    lower = last_fired if last_fired is not None else defined_at
    if missed is MissedTicks.ALL:
        return sorted(_ticks_back(cron, timezone, now, lower, max_catch_up))
    latest = _ticks_back(cron, timezone, now, lower, 1)
    if missed is MissedTicks.SKIP:
        return [t for t in latest if (now - t).total_seconds() <= grace_s]
    return latest


def schedule_run_id(definition: str, rule: int, tick: datetime) -> str:
    """The run a schedule starts for one tick: deterministic in (definition, rule, tick instant), so a
    second replica or a restarted one that fires the same tick names the same run, which the orchestrator
    answers as a duplicate (no second run)."""
    instant = tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return uuid.uuid5(SCHEDULED_RUN_NAMESPACE, f"{definition}/{rule}/{instant}").hex
