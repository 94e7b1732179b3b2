"""The monitor as a subprocess against the real broker: each alert rule fires exactly once, /metrics shows
the counters and lag gauges, SIGTERM exits 0, and a restarted monitor restores its tables from the
changelogs instead of alerting again."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from shared.avro import AvroSerde
from shared.contracts import (
    Alert,
    AlertKind,
    Contract,
    DeadLetter,
    ErrorInfo,
    EventKind,
    Origin,
    PipelineResult,
    QualityViolation,
    RunAccepted,
    RunEvent,
    RunFinished,
    RunStatus,
    Stage,
    utcnow,
)
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, Topics
from shared.settings import KafkaSettings
from shared.spec.models import OnFail
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

SERDE = AvroSerde()
EVENT_PARTITIONS = next(t.partitions for t in TOPICS if t.name == Topics.EVENTS)


class MonitorProcess:
    """``python -m services.monitor`` with a port file; stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port_file = log.with_suffix(".port")
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.monitor"],
                env={**os.environ, **env, "AOETL_HTTP_PORT": "0", "AOETL_PORT_FILE": str(self.port_file)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.port = wait_until(self._port, timeout=60, message="the monitor's port file")
        wait_until(self._ready, timeout=60, message="the monitor's /ready")

    def _port(self) -> int | None:
        assert self.proc.poll() is None, f"monitor exited with {self.proc.returncode}\n{self.tail()}"
        return int(self.port_file.read_text()) if self.port_file.exists() else None  # written atomically

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"monitor exited with {self.proc.returncode}\n{self.tail()}"
        return httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def wait(self, predicate: Callable[[], object], message: str, timeout: float = 60) -> None:
        """``wait_until`` that shows the monitor's log when it times out."""
        try:
            wait_until(predicate, timeout=timeout, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nmonitor log:\n{self.tail()}") from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


class AlertReader:
    """Everything on the alerts topic, from the beginning (one partition)."""

    def __init__(self, bootstrap: str, topic: str):
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"alert-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.alerts: list[Alert] = []

    def read(self) -> list[Alert]:
        while (msg := self._consumer.poll(0.2)) is not None:
            assert msg.error() is None, msg.error()
            self.alerts.append(SERDE.decode(msg.value() or b"", Alert))
        return self.alerts

    def counts(self) -> Counter[tuple[AlertKind, str | None]]:
        return Counter((a.kind, a.run_id) for a in self.read())

    def close(self) -> None:
        self._consumer.close()


@dataclasses.dataclass
class Stack:
    bootstrap: str
    suffix: str
    env: dict[str, str]
    producer: Producer
    logs: Path

    def topic(self, name: str) -> str:
        return f"{name}{self.suffix}"

    def publish(self, name: str, key: str, *values: Contract) -> None:
        for value in values:
            self.producer.produce(self.topic(name), key=key.encode(), value=SERDE.encode(value))
        assert self.producer.flush(30) == 0

    def event(self, run_id: str, kind: EventKind, stage: Stage = Stage.ORCHESTRATE, **kw: object) -> None:
        self.publish(Topics.EVENTS, run_id, RunEvent(run_id=run_id, kind=kind, stage=stage, **kw))

    def result(self, run_id: str, pipeline: str, status: RunStatus, errors: Sequence[ErrorInfo] = ()) -> None:
        now = utcnow()
        result = PipelineResult(
            run_id=run_id,
            request_id=uuid.uuid4().hex,
            pipeline=pipeline,
            status=status,
            started_at=now - timedelta(seconds=5),
            finished_at=now,
            errors=list(errors),
        )
        self.publish(Topics.RESULTS, run_id, result)

    def dead_letters(self, count: int) -> None:
        for _ in range(count):
            run_id = uuid.uuid4().hex  # keys spread the dead letters over the topic's partitions
            origin = Origin(topic=self.topic(Topics.DATA_EXTRACTED), partition=0, offset=1)
            error = ErrorInfo(error_class="QualityRuleViolation", message="amount < 0")
            self.publish(
                Topics.DEAD_LETTERS,
                run_id,
                DeadLetter(origin=origin, stage=Stage.TRANSFORM, error=error, run_id=run_id, payload=b"x"),
            )

    def monitor(self, name: str) -> MonitorProcess:
        return MonitorProcess(self.env, self.logs / f"{name}.log")


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    suffix = f"-mon-{uuid.uuid4().hex[:10]}"
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [dataclasses.replace(t, name=f"{t.name}{suffix}") for t in TOPICS],
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_TOPIC_SUFFIX": suffix,
        "AOETL_STUCK_AFTER_S": "600",
        "AOETL_STUCK_CHECK_INTERVAL_S": "0.5",
        "AOETL_QUALITY_MAX_FAILED_FRACTION": "0.1",
        "AOETL_DEAD_LETTER_WINDOW_S": "3600",
        "AOETL_DEAD_LETTER_MAX_PER_WINDOW": "2",
        "AOETL_LAG_GROUPS": json.dumps([f"lag-probe{suffix}"]),
        "AOETL_LAG_CHECK_INTERVAL_S": "0.5",
        "AOETL_LOG_FORMAT": "text",
    }
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    yield Stack(kafka_bootstrap, suffix, env, producer, tmp_path)
    producer.flush(10)
    # The shared broker keeps no garbage: our topics and faust's changelogs all carry the suffix.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    ours = [name for name in admin.list_topics(timeout=10).topics if suffix in name]
    for future in admin.delete_topics(ours, operation_timeout=30).values():
        future.result(timeout=30)


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
        first.wait(lambda: m("aoetl_dead_letters_seen_total", **dead_letters) == 3, "dead letters counted")
        assert m("aoetl_runs_finished_total", pipeline="orders", status="FAILED") == 1
        assert m("aoetl_runs_finished_total", pipeline="orders", status="COMPLETED") == 1
        assert m("aoetl_stage_rows_total", stage="transform", direction="rejected") == 30
        assert m("aoetl_stage_rows_total", stage="extract", direction="out") == 500
        assert m("aoetl_stage_rows_total", stage="load", direction="out") == 500
        assert m("aoetl_batch_latency_seconds_count", stage="transform") == 1
        assert m("aoetl_alerts_total", kind="RUN_FAILED", severity="CRITICAL") == 1
        # every event published so far is lag for a group that committed offset 0
        events_published = 11
        lag = {"group": f"lag-probe{stack.suffix}", "topic": stack.topic(Topics.EVENTS)}
        first.wait(lambda: m("aoetl_consumer_lag", **lag) == events_published, "the consumer lag gauge")
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
        second.wait(lambda: m("aoetl_dead_letters_seen_total", **dead_letters) == 3, "dead letters counted")
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
