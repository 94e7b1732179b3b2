"""The monitor as a subprocess against the real broker: each alert rule fires exactly once, /metrics shows
the counters and lag gauges, SIGTERM exits 0, and a restarted monitor restores its tables from the
changelogs instead of alerting again."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.avro import AvroSerde
from shared.contracts import (
    AlertKind,
    ConsumerLag,
    ErrorInfo,
    EventKind,
    QualityViolation,
    RunAccepted,
    RunFinished,
    RunStatus,
    Stage,
)
from shared.kafka.topics import TOPICS, Topics
from shared.spec.models import OnFail
from tests.helpers import wait_until
from tests.support.monitor_stack import AlertReader, Stack, monitor_stack

pytestmark = pytest.mark.integration

EVENT_PARTITIONS = next(t.partitions for t in TOPICS if t.name == Topics.EVENTS)


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    with monitor_stack(kafka_bootstrap, tmp_path) as stack_:
        yield stack_


def commit_group_at_start(stack: Stack, group: str) -> None:
    """A consumer group that committed offset 0 everywhere: its lag is every message on the topic."""
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    topic = stack.topic(Topics.EVENTS)
    consumer.commit(
        offsets=[TopicPartition(topic, p, 0) for p in range(EVENT_PARTITIONS)], asynchronous=False
    )
    consumer.close()


def test_alerts_once_metrics_lag_and_restart_restores_state(stack: Stack) -> None:
    failed, completed, quality, stuck = (uuid.uuid4().hex for _ in range(4))
    reader = AlertReader(stack.bootstrap, stack.topic(Topics.ALERTS))
    commit_group_at_start(stack, f"lag-probe{stack.suffix}")
    first = stack.monitor("monitor-1")
    try:
        accepted = RunAccepted(pipeline="orders", stuck_after_s=600)
        for run_id in (failed, completed, quality):
            stack.event(run_id, EventKind.RUN_ACCEPTED, payload=accepted)
        stack.event(stuck, EventKind.RUN_ACCEPTED, payload=RunAccepted(pipeline="slow", stuck_after_s=2))
        stack.event(stuck, EventKind.TASK_STARTED, Stage.EXTRACT)
        # 30 of 100 checked rows fail a quarantine rule: above the 10% limit.
        violation = QualityViolation(
            rule="quality[0]", on_fail=OnFail.QUARANTINE, failed_rows=30, reason="amount < 0"
        )
        stack.event(quality, EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, batch_id="b1", payload=violation)
        stack.event(
            quality,
            EventKind.BATCH_TRANSFORMED,
            Stage.TRANSFORM,
            batch_id="b1",
            rows_in=100,
            rows_out=70,
            rows_rejected=30,
            duration_ms=40,
        )
        stack.event(
            completed, EventKind.SPLIT_EXTRACTED, Stage.EXTRACT, rows_out=500, batches=1, duration_ms=200
        )
        stack.event(completed, EventKind.BATCH_LOADED, Stage.LOAD, batch_id="c1", rows_in=500, rows_out=500)
        for run_id, status in ((failed, RunStatus.FAILED), (completed, RunStatus.COMPLETED)):
            stack.event(run_id, EventKind.RUN_FINISHED, payload=RunFinished(status=status))
        errors = [
            ErrorInfo(error_class="SourceUnavailable", message="connection refused"),
            ErrorInfo(error_class="RunTimeout", message="run exceeded 60s"),
        ]
        stack.result(failed, "orders", RunStatus.FAILED, errors)
        stack.result(failed, "orders", RunStatus.FAILED, errors)  # redelivered: still one alert
        stack.result(completed, "orders", RunStatus.COMPLETED)
        stack.dead_letters(3)  # limit 2 per window: the third one alerts

        expected = {
            (AlertKind.RUN_FAILED, failed),
            (AlertKind.QUALITY_THRESHOLD, quality),
            (AlertKind.RUN_STUCK, stuck),
            (AlertKind.DEAD_LETTER_GROWTH, None),
        }
        first.wait(lambda: expected <= set(reader.counts()), "the four alerts")
        alerts = {(a.kind, a.run_id): a for a in reader.read()}
        failed_alert = alerts[(AlertKind.RUN_FAILED, failed)]
        assert failed_alert.severity == "CRITICAL"
        assert "SourceUnavailable: connection refused" in failed_alert.message
        assert "RunTimeout: run exceeded 60s" in failed_alert.message
        assert alerts[(AlertKind.RUN_STUCK, stuck)].pipeline == "slow"
        assert "30 of 100" in alerts[(AlertKind.QUALITY_THRESHOLD, quality)].message

        m = first.metric
        dead_letters = {"stage": "transform", "error_class": "QualityRuleViolation"}
        first.wait(lambda: m("aoetl_dead_letters_total", **dead_letters) == 3, "dead letters counted")
        assert m("aoetl_runs_finished_total", pipeline="orders", status="FAILED") == 1
        assert m("aoetl_runs_finished_total", pipeline="orders", status="COMPLETED") == 1
        # A pipeline's run counters exist from its first event, at 0, so a first failure is an increase.
        assert m("aoetl_runs_finished_total", pipeline="slow", status="FAILED") == 0
        # The results started 5 s before they finished.
        assert m("aoetl_run_duration_seconds_count", pipeline="orders", status="FAILED") == 1
        assert m("aoetl_run_duration_seconds_sum", pipeline="orders", status="COMPLETED") == 5
        last_success = m("aoetl_pipeline_last_success_timestamp_seconds", pipeline="orders") or 0
        assert time.time() - 600 < last_success <= time.time()
        assert m("aoetl_pipeline_last_success_timestamp_seconds", pipeline="slow") is None
        assert m("aoetl_rows_total", pipeline="orders", stage="transform", direction="rejected") == 30
        assert m("aoetl_rows_total", pipeline="orders", stage="extract", direction="out") == 500
        assert m("aoetl_rows_total", pipeline="orders", stage="load", direction="out") == 500
        first.wait(lambda: m("aoetl_runs_stuck", pipeline="slow") == 1, "the stuck-runs gauge")
        assert m("aoetl_batch_latency_seconds_count", stage="transform") == 1
        assert m("aoetl_alerts_total", kind="RUN_FAILED", severity="CRITICAL") == 1
        # every event published so far is lag for a group that committed offset 0
        events_published = 11
        lag = {"group": f"lag-probe{stack.suffix}", "topic": stack.topic(Topics.EVENTS)}
        first.wait(lambda: m("aoetl_consumer_lag", **lag) == events_published, "the consumer lag gauge")
        # ...and what it measured is on the lag topic, for the gateway's console (ConsumerLag, key group)
        measured = wait_until(
            lambda: [c for c in lag_records(stack) if c.group == lag["group"]] or None,
            timeout=30,
            message="the group's ConsumerLag record",
        )
        assert measured[-1].topics == {stack.topic(Topics.EVENTS): events_published}
        first.wait(
            lambda: m("aoetl_monitor_runs_tracked", state="active") == 2, "runs tracked"
        )  # quality, stuck
        assert first.stop() == 0, first.tail()
    finally:
        first.stop()

    second = stack.monitor("monitor-2")
    try:
        # The restarted monitor knows the runs from the changelog, before any new message arrives.
        m = second.metric
        second.wait(lambda: m("aoetl_monitor_runs_tracked", state="active") == 2, "the restored runs table")
        assert m("aoetl_monitor_runs_tracked", state="finished") == 2
        # What would alert again if the tables were not restored:
        stack.result(failed, "orders", RunStatus.FAILED, errors)  # a late redelivery of the failed result
        fail = QualityViolation(rule="quality[1]", on_fail=OnFail.FAIL, failed_rows=1, reason="id is null")
        stack.event(quality, EventKind.QUALITY_VIOLATION, Stage.TRANSFORM, batch_id="b2", payload=fail)
        stack.event(stuck, EventKind.TASK_STARTED, Stage.EXTRACT)  # progress, then stuck again (2 s)
        stack.dead_letters(3)  # 6 in the window, the limit was crossed before the restart
        # Sentinels: a new stuck run with a longer threshold than the old one, and a new failed run.
        sentinel, failed_again = uuid.uuid4().hex, uuid.uuid4().hex
        stack.event(sentinel, EventKind.RUN_ACCEPTED, payload=RunAccepted(pipeline="slow", stuck_after_s=4))
        stack.result(
            failed_again, "orders", RunStatus.TIMED_OUT, [ErrorInfo(error_class="RunTimeout", message="x")]
        )
        sentinels = {(AlertKind.RUN_STUCK, sentinel), (AlertKind.RUN_FAILED, failed_again)}
        second.wait(lambda: sentinels <= set(reader.counts()), "the sentinel alerts")
        second.wait(lambda: m("aoetl_dead_letters_total", **dead_letters) == 3, "dead letters counted")
        assert reader.counts() == Counter(
            {
                (AlertKind.RUN_FAILED, failed): 1,
                (AlertKind.QUALITY_THRESHOLD, quality): 1,
                (AlertKind.RUN_STUCK, stuck): 1,
                (AlertKind.DEAD_LETTER_GROWTH, None): 1,
                (AlertKind.RUN_STUCK, sentinel): 1,
                (AlertKind.RUN_FAILED, failed_again): 1,
            }
        )
        assert second.stop() == 0, second.tail()
    finally:
        second.stop()
        reader.close()


def lag_records(stack: Stack) -> list[ConsumerLag]:
    """The records on the lag topic (one partition), from the beginning to its end as of now (the monitor
    keeps writing: every check)."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"lag-{uuid.uuid4().hex}"})
    try:
        tp = TopicPartition(stack.topic(Topics.LAG), 0, OFFSET_BEGINNING)
        end = consumer.get_watermark_offsets(tp, timeout=10)[1]
        consumer.assign([tp])
        found: list[ConsumerLag] = []
        while end > 0 and (msg := consumer.poll(1.0)) is not None:
            assert msg.error() is None, msg.error()
            found.append(AvroSerde().decode(msg.value() or b"", ConsumerLag))
            if msg.offset() >= end - 1:
                break
        return found
    finally:
        consumer.close()
