"""Fault injection on the monitor: it is SIGKILLed mid-run (alerts that fall due while it is down must
still fire once it is back) and again right after it alerted (its restored tables must keep it from
alerting twice for the same run and rule). The runs' destinations are checked against their ledgers too.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.contracts import AlertKind, RunStatus, Stage
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.faults.harness import (
    OrdersRun,
    RunWatcher,
    assert_exactly_once,
    orders_run,
    read_alerts,
    running_system,
    signal_replica,
    start_replicas,
    uncommitted_records,
)
from tests.helpers import wait_until

# The monitor now honours AOETL_SESSION_TIMEOUT_MS (the e2e stack sets 6 s): a killed member leaves the
# group in seconds, so this runs in ~70 s instead of ~160 s with faust's 60 s default, and is part of
# `make test`.
pytestmark = [pytest.mark.faults]

MONITOR_ENV = {
    "AOETL_STUCK_AFTER_S": "600",  # only the alerts these runs are built to raise
    "AOETL_STUCK_CHECK_INTERVAL_S": "1",
    "AOETL_QUALITY_MAX_FAILED_FRACTION": "0.05",
    "AOETL_LAG_GROUPS": "[]",
}


@pytest.fixture
def system(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[System]:
    replicas = {"orchestrator": 1, "extract": 1, "transform": 1, "load": 1}
    with running_system(kafka_bootstrap, postgres_dsn, replicas) as sys_:
        start_replicas(sys_, "monitor", env=MONITOR_ENV)
        yield sys_


def only_paid(directory: Path, label: str, seed: int) -> OrdersRun:
    """A run whose quality rule quarantines every order that is not paid (about a third of those kept)."""
    rule = {"rule": "accepted_values", "column": "status", "values": ["paid"], "on_fail": "quarantine"}
    run = orders_run(directory, label, 20_000, seed=seed, batch_rows=1_000, quality=[rule])
    run.must_arrive = [r for r in run.rows if r["status"] == "paid"]
    return run


def kill_and_restart_monitor(system: System) -> None:
    signal_replica(system.supervisor.alive("monitor")[0], signal.SIGKILL, wait_exit=10)
    start_replicas(system, "monitor", env=MONITOR_ENV)


def test_monitor_killed_mid_run_alerts_after_restart_and_never_twice(
    system: System, tmp_path: Path, postgres_dsn: str, kafka_bootstrap: str
) -> None:
    quarantining = only_paid(tmp_path / "q", "monitor-quarantine", seed=61)
    failing = orders_run(tmp_path / "f", "monitor-fail", 10, seed=62)
    failing.spec["source"]["path"] = str(tmp_path / "missing-*.csv")  # fails at planning: RUN_FAILED
    with RunWatcher(system) as watcher:
        watcher.submit(quarantining)
        watcher.wait_stage(quarantining.run_id, Stage.TRANSFORM)
        signal_replica(system.supervisor.alive("monitor")[0], signal.SIGKILL, wait_exit=10)
        watcher.submit(failing)  # all of this run happens while the monitor is down
        assert watcher.await_result(failing.run_id).status is RunStatus.FAILED
        start_replicas(system, "monitor", env=MONITOR_ENV)
        result = watcher.await_result(quarantining.run_id)
    assert_exactly_once(postgres_dsn, quarantining, result)

    expected = {
        (quarantining.run_id, AlertKind.QUALITY_THRESHOLD),
        (failing.run_id, AlertKind.RUN_FAILED),
    }

    def alerted() -> Counter[tuple[str | None, AlertKind]]:
        return Counter((a.run_id, a.kind) for a in read_alerts(system))

    wait_until(lambda: expected <= set(alerted()), timeout=90, message=f"the alerts {expected}")
    # Killed again right after alerting: on restart it reprocesses what it had not committed yet, and its
    # tables (restored from their changelogs) must say those alerts were already sent.
    kill_and_restart_monitor(system)
    monitor_group = f"aoetl-monitor{system.suffix}{system.suffix}"
    inputs = [system.client.topic(t) for t in (Topics.EVENTS, Topics.RESULTS)]
    wait_until(
        lambda: uncommitted_records(kafka_bootstrap, monitor_group, inputs) == 0,
        timeout=90,
        message="the restarted monitor to catch up",
    )
    counts = alerted()
    assert set(counts) == expected, f"unexpected alerts: {set(counts) - expected}"
    assert all(n == 1 for n in counts.values()), f"an alert was sent twice: {counts}"
