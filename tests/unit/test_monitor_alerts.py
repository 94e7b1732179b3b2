"""What makes two alerts the same alert (``alert_identity``): the key by which the monitor finds an alert
already on the alerts topic, so that every rule's alert goes out once per run (or dead-letter window)."""

from __future__ import annotations

from services.monitor.alerts import alert_identity
from services.monitor.rules import dead_letter_growth_alert
from shared.contracts import Alert, AlertKind, Severity


def test_a_runs_alert_of_a_kind_is_one_alert_whatever_its_message_or_id() -> None:
    first = Alert(kind=AlertKind.RUN_STUCK, severity=Severity.WARNING, message="idle 301s", run_id="r1")
    again = Alert(kind=AlertKind.RUN_STUCK, severity=Severity.WARNING, message="idle 305s", run_id="r1")
    assert first.alert_id != again.alert_id
    assert alert_identity(first) == alert_identity(again)
    other_kind = Alert(kind=AlertKind.RUN_FAILED, severity=Severity.CRITICAL, message="x", run_id="r1")
    other_run = Alert(kind=AlertKind.RUN_STUCK, severity=Severity.WARNING, message="x", run_id="r2")
    assert len({alert_identity(a) for a in (first, other_kind, other_run)}) == 3


def test_dead_letter_growth_is_one_alert_per_window() -> None:
    window = dead_letter_growth_alert(2, 3, 2, 3600.0, 3600.0)
    same_window = dead_letter_growth_alert(2, 3, 2, 3600.0, 3600.0)
    next_window = dead_letter_growth_alert(2, 3, 2, 7200.0, 3600.0)
    assert window is not None and same_window is not None and next_window is not None
    assert alert_identity(window) == alert_identity(same_window)
    assert alert_identity(window) != alert_identity(next_window)
