"""The monitor as a subprocess against the real broker, on topics of its own (a unique suffix): publish
its inputs directly, read its alerts back ``read_committed``, stop it with SIGTERM or kill it with SIGKILL.
Shared by the monitor's integration and fault tests."""

from __future__ import annotations

import contextlib
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
    RunEvent,
    RunStatus,
    Stage,
    utcnow,
)
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, Topics
from shared.settings import KafkaSettings
from tests.helpers import wait_until

SERDE = AvroSerde()


class MonitorProcess:
    """``python -m services.monitor`` (or ``module``, a wrapper of it) with a port file; stopped with
    SIGTERM."""

    def __init__(self, env: dict[str, str], log: Path, module: str = "services.monitor"):
        self.port_file = log.with_suffix(".port")
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
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
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200
        except httpx.TransportError:  # the server may drop a request while it is starting
            return False

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

    def kill(self) -> None:
        """SIGKILL: no graceful stop, nothing flushed or committed that was not already."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


class AlertReader:
    """Everything on the alerts topic, from the beginning (one partition), as every consumer of alerts
    reads it: committed only (the monitor writes its alerts in transactions)."""

    def __init__(self, bootstrap: str, topic: str):
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"alert-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
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

    @property
    def monitor_group(self) -> str:
        """The monitor's faust app id: its consumer group, and the prefix of its changelog topics."""
        return f"aoetl-monitor{self.suffix}"

    def changelog(self, table: str) -> str:
        return f"{self.monitor_group}-{table}-changelog"

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

    def monitor(self, name: str, module: str = "services.monitor") -> MonitorProcess:
        return MonitorProcess(self.env, self.logs / f"{name}.log", module)


@contextlib.contextmanager
def monitor_stack(kafka_bootstrap: str, logs: Path) -> Iterator[Stack]:
    """The monitor's topics under a fresh suffix, and the environment of a monitor on them; the topics
    (and faust's changelogs, which carry the suffix in the app id) are deleted afterwards."""
    suffix = f"-mon-{uuid.uuid4().hex[:10]}"
    names = {f"{t.name}{suffix}" for t in TOPICS}
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [dataclasses.replace(t, name=f"{t.name}{suffix}") for t in TOPICS],
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # Created is not yet listed everywhere (the broker's metadata follows the controller): the monitor
    # refuses to start on input topics it cannot see.
    wait_until(
        lambda: names <= set(admin.list_topics(timeout=10).topics), timeout=30, message=f"the topics {names}"
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
    try:
        yield Stack(kafka_bootstrap, suffix, env, producer, logs)
    finally:
        producer.flush(10)
        # The shared broker keeps no garbage: our topics and faust's changelogs all carry the suffix.
        ours = [name for name in admin.list_topics(timeout=10).topics if suffix in name]
        if ours:
            for future in admin.delete_topics(ours, operation_timeout=30).values():
                future.result(timeout=30)
