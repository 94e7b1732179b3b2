"""Every alert the monitor raises names its tenant: a run's alerts the run's (from RUN_ACCEPTED, kept in the
table record across restarts, or from the result), the dead-letter growth the deployment's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.monitor.rules import (
    RunRecord,
    Thresholds,
    apply_event,
    dead_letter_growth_alert,
    result_alert,
    stuck_alert,
)
from shared.contracts import (
    DEFAULT_TENANT,
    AlertKind,
    EventKind,
    PipelineResult,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunStatus,
    Stage,
)
from shared.spec.models import OnFail

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = Thresholds(stuck_after_s=10, quality_max_failed_fraction=0.1, dead_letter_max_per_window=5)


def event(kind: EventKind, stage: Stage = Stage.ORCHESTRATE, **kw: object) -> RunEvent:
    return RunEvent(run_id="r1", kind=kind, stage=stage, at=T0, **kw)


def record_of(*events: RunEvent) -> tuple[RunRecord, list[AlertKind], list[str]]:
    record: RunRecord | None = None
    kinds: list[AlertKind] = []
    tenants: list[str] = []
    for ev in events:
        record, alerts = apply_event(record, ev, partition=0, thresholds=LIMITS)
        kinds += [a.kind for a in alerts]
        tenants += [a.tenant for a in alerts]
    assert record is not None
    return record, kinds, tenants


def accepted(tenant: str | None) -> RunEvent:
    return event(EventKind.RUN_ACCEPTED, payload=RunAccepted(pipeline="orders", tenant=tenant))


FAILED_RULE = event(
    EventKind.QUALITY_VIOLATION,
    Stage.TRANSFORM,
    batch_id="b1",
    payload=QualityViolation(rule="r", on_fail=OnFail.FAIL, reason="x", failed_rows=1),
)


def test_a_runs_quality_and_stuck_alerts_are_its_tenants_even_after_a_restart() -> None:
    record, kinds, tenants = record_of(accepted("acme"), FAILED_RULE)
    assert (kinds, tenants) == ([AlertKind.QUALITY_THRESHOLD], ["acme"])
    restored = RunRecord.from_table(record.to_table())  # the table's changelog, after a restart
    assert restored is not None
    stuck = stuck_alert(restored, T0.timestamp() + 60)
    assert stuck is not None and stuck.tenant == "acme"


def test_a_run_whose_accepted_event_names_no_tenant_alerts_the_default_tenant() -> None:
    _, kinds, tenants = record_of(accepted(None), FAILED_RULE)
    assert (kinds, tenants) == ([AlertKind.QUALITY_THRESHOLD], [DEFAULT_TENANT])


def test_a_failed_results_alert_is_the_results_tenant() -> None:
    failed = PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="orders",
        tenant="acme",
        status=RunStatus.FAILED,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
    )
    alert = result_alert(failed)
    assert alert is not None and alert.tenant == "acme"


def test_the_dead_letter_growth_is_the_deployments_own_alert() -> None:
    alert = dead_letter_growth_alert(5, 6, 5, 0.0, 300)
    assert alert is not None and alert.tenant == DEFAULT_TENANT and alert.run_id is None
