"""Fault injection on the monitor: it is SIGKILLed mid-run (alerts that fall due while it is down must
still fire once it is back) and again right after it alerted (it must not alert twice for the same run and
rule). The runs' destinations are checked against their ledgers too.

The second kill lands at a random point of the monitor's work. The one window that matters (an alert is
on the alerts topic, the table change that remembers it is not yet on its changelog, nor the input offset
committed) lasts milliseconds, so the focused test holds it open instead: the monitor it kills runs with
faust's changelog writes and offset commits held back (``tests.support.monitor_writes_held``).
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from shared.contracts import AlertKind, ErrorInfo, EventKind, QualityViolation, RunAccepted, RunStatus, Stage
from shared.kafka.topics import Topics
from shared.spec.models import OnFail
from tests.e2e.conftest import System
from tests.faults.harness import (
    OrdersRun,
    RunWatcher,
    assert_exactly_once,
    orders_run,
    running_system,
    signal_replica,
    start_replicas,
)
from tests.faults.kafka_views import read_alerts, uncommitted_records
from tests.helpers import wait_until
from tests.support.monitor_stack import AlertReader, Stack, monitor_stack

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


# Slow (``make chaos`` only): a whole system, two monitor kills and restarts, ~90 s. What ``make test`` keeps
# of it: the focused test below (SIGKILLed in the one window that matters, the restarted monitor processes
# every input past its committed offsets again and alerts once), and tests/integration/test_monitor.py
# (each rule alerts once; a restarted monitor restores its tables from the changelogs and alerts again
# only for what is new). The monitor honours AOETL_SESSION_TIMEOUT_MS (6 s here), so a killed member leaves
# its group in seconds rather than faust's 60 s.
@pytest.mark.slow
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


# ------------------------------------------------------------------ the window, held open
@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    with monitor_stack(kafka_bootstrap, tmp_path) as stack_:
        yield stack_


def records_in(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
        return sum(high - low for low, high in marks)
    finally:
        consumer.close()


def test_monitor_killed_after_alerting_before_its_tables_recorded_it_alerts_once(stack: Stack) -> None:
    quality, failed = uuid.uuid4().hex, uuid.uuid4().hex
    expected = Counter({(AlertKind.QUALITY_THRESHOLD, quality): 1, (AlertKind.RUN_FAILED, failed): 1})
    stack.env["AOETL_SESSION_TIMEOUT_MS"] = "6000"  # the killed member leaves the group in seconds
    reader = AlertReader(stack.bootstrap, stack.topic(Topics.ALERTS))
    first = stack.monitor("monitor-killed", module="tests.support.monitor_writes_held")
    try:
        stack.event(quality, EventKind.RUN_ACCEPTED, payload=RunAccepted(pipeline="orders"))
        violation = QualityViolation(rule="quality[0]", on_fail=OnFail.QUARANTINE, failed_rows=30, reason="x")
        stack.event(quality, EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, batch_id="b1", payload=violation)
        stack.event(quality, EventKind.BATCH_TRANSFORMED, Stage.TRANSFORM, batch_id="b1", rows_in=100)
        stack.result(failed, "orders", RunStatus.FAILED, [ErrorInfo(error_class="E", message="m")])
        first.wait(lambda: set(expected) <= set(reader.counts()), "the two alerts")
        # Inside the window: alerted, and neither table has recorded it on its changelog.
        changelogs = [stack.changelog("runs"), stack.changelog("failed-runs")]
        assert [records_in(stack.bootstrap, t) for t in changelogs] == [0, 0]
        first.kill()
    finally:
        first.stop()
    # It processes its inputs again, from tables restored without those alerts.
    second = stack.monitor("monitor-restarted")
    try:
        inputs = [stack.topic(Topics.EVENTS), stack.topic(Topics.RESULTS)]
        second.wait(
            lambda: uncommitted_records(stack.bootstrap, stack.monitor_group, inputs) == 0,
            "the restarted monitor to process its inputs again",
            timeout=90,
        )
        assert reader.counts() == expected, "an alert was sent twice"
        # It did raise them again, and found them on the alerts topic.
        for kind in (AlertKind.QUALITY_THRESHOLD, AlertKind.RUN_FAILED):
            assert second.metric("aoetl_alerts_not_repeated_total", kind=kind.value) == 1
        assert second.stop() == 0, second.tail()
    finally:
        second.stop()
        reader.close()
