"""What each console page shows, built from the gateway's in-memory views for one tenant: pure functions
of the gateway's state, so the pages are tested without HTTP, and every figure is the one the REST API
answers (``GET /runs/{id}`` folds a run's events with ``shared.progress``, and so does this).

Every text that may carry a secret (errors, decisions, alert messages, failing sample values) goes through
``shared.redaction.redact`` once more here; escaping is the templates' (Jinja2 autoescape), never done by
hand. A tenant's records only: the lists filter on the principal's tenant exactly as ``records_api`` does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.gateway.core import Gateway
from services.gateway.records import DeadLetterView
from services.gateway.redrive import replay_refusal
from services.gateway.state import RunNotes, RunStatusView
from shared.contracts import (
    Alert,
    ConsumerLag,
    PipelineDefinition,
    PipelineResult,
    RuleAction,
    WriteOutcome,
)
from shared.kafka.topics import Topics
from shared.progress import RunProgress
from shared.redaction import redact

PAGE_SIZE = 50
FINAL = frozenset({"COMPLETED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELLED"})


@dataclass(frozen=True)
class Pager:
    """Server-side pagination: page numbers from 1, ``PAGE_SIZE`` records a page."""

    page: int
    total: int
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None


def clamp_page(page: int, total: int, size: int = PAGE_SIZE) -> Pager:
    return Pager(min(max(page, 1), max(1, math.ceil(total / size))), total, size)


@dataclass(frozen=True)
class StageRow:
    stage: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    batches: int
    duration_ms: int

    @property
    def rate(self) -> float | None:
        """Rows out per second of the stage's busy time (its batches' durations added up)."""
        return self.rows_out / (self.duration_ms / 1000) if self.duration_ms > 0 else None


@dataclass(frozen=True)
class RuleRow:
    rule: str
    columns: str
    rows_checked: int
    rows_failed: int
    action: str
    samples: str

    @property
    def fraction(self) -> float:
        return self.rows_failed / self.rows_checked if self.rows_checked else 0.0


@dataclass(frozen=True)
class LetterRow:
    letter: DeadLetterView
    error: str
    refusal: str | None  # why it cannot be replayed from the console, None: it can


@dataclass
class RunDetail:
    view: RunStatusView
    result: PipelineResult | None
    stages: list[StageRow]
    quality: list[RuleRow]
    quality_final: bool  # the result's outcomes (True) or the fold's figures so far
    written: list[str]
    decisions: list[str]
    errors: list[str]
    letters: list[LetterRow]
    alerts: list[Alert]
    bytes_loaded: int | None = None  # None: a sink that cannot say (PostgreSQL, DuckDB)
    lag: dict[str, int] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.view.status in FINAL and self.result is not None


def runs_page(
    gateway: Gateway, tenant: str, *, pipeline: str | None, status: str | None, page: int
) -> tuple[Pager, list[RunStatusView]]:
    """One page of the tenant's runs, newest first (a page past the end: the last one); only that page's
    figures are folded."""
    offset = (max(page, 1) - 1) * PAGE_SIZE
    total, runs = gateway.runs.recent_page(
        tenant, pipeline=pipeline, status=status, offset=offset, limit=PAGE_SIZE
    )
    pager = clamp_page(page, total)
    if pager.offset != offset:
        total, runs = gateway.runs.recent_page(
            tenant, pipeline=pipeline, status=status, offset=pager.offset, limit=PAGE_SIZE
        )
    return pager, runs


def result_of(view: RunStatusView) -> PipelineResult | None:
    if view.result is None:
        return None
    try:
        return PipelineResult.model_validate(view.result)
    except ValidationError:  # a result of a newer writer than this gateway: show the run without it
        return None


def run_detail(gateway: Gateway, tenant: str, view: RunStatusView) -> RunDetail:
    result = result_of(view)
    progress = gateway.runs.progress_of(view.run_id)
    notes = gateway.runs.notes_of(view.run_id) or RunNotes()
    stages = [
        StageRow(name, s.rows_in, s.rows_out, s.rows_rejected, s.batches, s.duration_ms)
        for name, s in view.stages.items()
    ]
    if result is not None and result.stages:  # the result's figures are the final ones
        stages = [
            StageRow(s.stage.value, s.rows_in, s.rows_out, s.rows_rejected, s.batches, s.duration_ms)
            for s in result.stages
        ]
    letters = [
        LetterRow(d, redact(f"{d.error.error_class}: {d.error.message}"), replay_refusal(d, gateway.settings))
        for d in gateway.records.dead_letters(tenant, gateway.runs.tenant_of)
        if d.run_id == view.run_id
    ]
    alerts = [a for a in gateway.records.alerts(tenant) if a.run_id == view.run_id]
    return RunDetail(
        view=view,
        result=result,
        stages=stages,
        quality=_quality(result, progress),
        quality_final=result is not None,
        written=[_written(w) for w in result.written] if result else [],
        decisions=[redact(d) for d in (result.decisions if result else notes.decisions)],
        errors=[_error(e.path, e.message, e.error_class) for e in result.errors] if result else _notes(notes),
        letters=letters,
        alerts=alerts,
        bytes_loaded=view.bytes_loaded if result is None else _bytes_written(result.written),
        lag=dict(notes.lag),
    )


def _quality(result: PipelineResult | None, progress: RunProgress | None) -> list[RuleRow]:
    if result is not None:
        return [
            RuleRow(
                o.rule,
                ", ".join(o.columns),
                o.rows_checked,
                o.rows_failed,
                o.action.value,
                redact(", ".join(o.samples)),
            )
            for o in result.quality
        ]
    if progress is None:
        return []
    return [  # in progress: the fold's figures so far, the action the rule's level will take
        RuleRow(
            t.rule,
            "",
            t.rows_checked,
            t.rows_failed,
            _LEVEL_ACTIONS[t.on_fail.value].value if t.rows_failed or t.failed else RuleAction.PASSED.value,
            redact(", ".join(t.samples)),
        )
        for t in progress.rule_totals()
    ]


_LEVEL_ACTIONS = {"fail": RuleAction.FAILED, "quarantine": RuleAction.QUARANTINED, "warn": RuleAction.WARNED}


def _written(written: WriteOutcome) -> str:
    size = f", {written.bytes:,} bytes" if written.bytes is not None else ""
    return f"{written.rows:,} rows to {written.destination} {redact(written.target)}{size}"


def _bytes_written(written: list[WriteOutcome]) -> int | None:
    """The result's bytes (the fold's, final): None if a destination could not say."""
    sizes = [w.bytes for w in written]
    return None if None in sizes else sum(s for s in sizes if s is not None)


def _error(path: str | None, message: str, error_class: str) -> str:
    where = f"{path}: " if path else ""
    return redact(f"{where}{message} ({error_class})")


def _notes(notes: RunNotes) -> list[str]:
    return [redact(e) for e in notes.errors]


@dataclass(frozen=True)
class DefinitionRow:
    definition: PipelineDefinition
    source: str
    destination: str
    continuous: bool
    triggers: list[str]


def definitions(gateway: Gateway, tenant: str) -> list[DefinitionRow]:
    """The tenant's definitions with their triggers: those kept in the definition and the operator's
    webhook rules (the gateway's settings) that start it."""
    rows = []
    for d in gateway.catalog.of_tenant(tenant):
        triggers = [_describe(t.model_dump(mode="json")) for t in d.triggers]
        triggers += [
            _describe({**r.model_dump(mode="json", exclude={"definition"}), "type": "webhook (gateway rule)"})
            for r in gateway.settings.triggers
            if r.definition == d.name
        ]
        rows.append(
            DefinitionRow(d, d.spec.source.type, d.spec.destination.type, bool(d.spec.continuous), triggers)
        )
    return rows


def _describe(trigger: dict[str, Any]) -> str:
    """A trigger as one line of ``key=value``, whatever its type (new trigger types show as they are)."""
    kind = trigger.pop("type", "?")
    parts = [
        f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}"
        for k, v in trigger.items()
        if v not in (None, {}, [], "")
    ]
    return f"{kind}: {' '.join(parts)}"


@dataclass(frozen=True)
class StreamRow:
    view: RunStatusView
    lag: dict[str, int]
    lag_at: datetime | None
    rows_read: int
    batches_read: int
    measured: ConsumerLag | None = None  # its readers' group, as the monitor measured it on the broker

    @property
    def total_lag(self) -> int | None:
        return sum(self.lag.values()) if self.lag else None

    @property
    def measured_lag(self) -> int | None:
        return sum(self.measured.topics.values()) if self.measured is not None else None


# Each stage's input and the group that consumes it (services' own groups; the suffix is appended).
STAGE_INPUTS = (
    ("extract", "aoetl-extract", Topics.TASKS),
    ("transform", "aoetl-transform", Topics.DATA_EXTRACTED),
    ("load", "aoetl-load", Topics.DATA_TRANSFORMED),
)


@dataclass(frozen=True)
class StageBacklog:
    stage: str
    group: str
    topic: str
    lag: int | None  # None: not measured (the monitor does not watch the group, or has not said yet)
    at: datetime | None


def streams(gateway: Gateway, tenant: str) -> list[StreamRow]:
    """The tenant's continuous runs the gateway keeps, with the backlog their readers last reported and,
    when the monitor measures their group (``AOETL_LAG_GROUPS``), the broker's."""
    rows = []
    for view in gateway.runs.continuous(tenant):
        notes = gateway.runs.notes_of(view.run_id) or RunNotes()
        extract = view.stages.get("extract")
        progress = gateway.runs.progress_of(view.run_id)
        pipeline = view.pipeline or (progress.pipeline if progress is not None else None)
        group = gateway.settings.topic(f"aoetl-stream.{pipeline}")  # services.extract.streams
        rows.append(
            StreamRow(
                view,
                dict(notes.lag),
                notes.lag_at,
                extract.rows_out if extract else 0,
                extract.batches if extract else 0,
                gateway.records.consumer_lag(group) if pipeline else None,
            )
        )
    return rows


def stage_backlog(gateway: Gateway) -> list[StageBacklog]:
    """Each stage's backlog on its input topic, as the monitor last measured it (``ConsumerLag``)."""
    rows = []
    for stage, name, topic in STAGE_INPUTS:
        group, actual = gateway.settings.topic(name), gateway.settings.topic(topic)
        lag = gateway.records.consumer_lag(group)
        found = lag.topics.get(actual) if lag is not None else None
        rows.append(StageBacklog(stage, group, actual, found, lag.at if lag is not None else None))
    return rows


def alerts_page(gateway: Gateway, tenant: str, page: int) -> tuple[Pager, list[Alert]]:
    alerts = gateway.records.alerts(tenant)
    pager = clamp_page(page, len(alerts))
    return pager, alerts[pager.offset : pager.offset + pager.size]


def alert_message(alert: Alert) -> str:
    return redact(alert.message)
