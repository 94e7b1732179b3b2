"""End to end, every service a process: events on a Kafka topic start registered pipelines (one run per
event, one run per window of events), and a continuous pipeline delivers a topic into PostgreSQL exactly
once while events keep arriving, across a stop and a resume."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
import psycopg
import pytest
from confluent_kafka import KafkaError, Message

from aoetl.client import AoetlClient
from shared.contracts import (
    DEFAULT_TENANT,
    Contract,
    DeadLetter,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    RunStatus,
    Stage,
    TriggerKind,
)
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import make_producer
from shared.kafka.topics import Topics, TopicSpec
from shared.settings import ServiceSettings, load_settings
from shared.spec import parse_spec
from shared.triggers import split_definition_document, topic_run_id
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import assert_completed, await_result, stage
from tests.helpers import wait_until
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e

C = TypeVar("C", bound=Contract)

# The shared system (tests/e2e/conftest.py) runs two extract replicas: a stream's partitions are shared
# between them and handed over.


# ------------------------------------------------------------------------------------------ helpers
class EventProducer:
    """Produces JSON events and remembers where each landed (partition, offset)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self._producer = make_producer(secure_kafka.operator_settings(bootstrap))
        self.delivered: list[tuple[int, int, dict]] = []
        self.failed: list[KafkaError] = []

    def send(self, event: dict, key: str | None = None) -> None:
        def report(error: KafkaError | None, message: Message, event: dict = event) -> None:
            if error is not None:
                self.failed.append(error)
            else:
                self.delivered.append((message.partition() or 0, message.offset() or 0, event))

        self._producer.produce(self.topic, json.dumps(event).encode(), key=key, on_delivery=report)
        self._producer.poll(0)

    def send_raw(self, value: bytes) -> None:
        """A record that is no event (it must be dead-lettered, not loaded)."""
        self._producer.produce(self.topic, value, key=b"poison")
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(30) == 0
        assert not self.failed, self.failed


class PacedStream:
    """Sends ``total`` events from a thread, ``per_tick`` every 0.1 s (~1000 events/s by default): a steady
    stream, not one burst."""

    def __init__(
        self,
        events: EventProducer,
        total: int,
        make: Callable[[int], tuple[dict, str]],
        *,
        per_tick: int = 100,
    ):
        self.total, self.per_tick = total, per_tick
        self.produced = 0
        self.sent = threading.Event()
        self.error: BaseException | None = None  # what stopped the thread before it sent everything
        self._events = events
        self._make = make
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PacedStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for i in range(self.total):
                event, key = self._make(i)
                self._events.send(event, key=key)
                self.produced = i + 1
                if i % self.per_tick == self.per_tick - 1:
                    time.sleep(0.1)  # pacing, not waiting for anything
            self._events.flush()
        except BaseException as exc:  # the test's thread reports it (wait_sent), not a stray traceback
            self.error = exc
            raise
        self.sent.set()

    def wait_sent(self, stall: float = 60.0) -> None:
        """Until every event is sent and flushed. A paced stream's length depends on how fast this machine
        runs it, so the bound is on progress: fail when no event was sent for ``stall`` seconds, or at once
        with the thread's own error."""
        last, since = -1, time.monotonic()

        def done() -> bool:
            nonlocal last, since
            assert self.error is None, f"the stream's thread failed: {self.error!r}"
            if self.produced != last:
                last, since = self.produced, time.monotonic()
            assert time.monotonic() - since < stall, (
                f"no event sent for {stall:.0f} s ({last} of {self.total})"
            )
            return self.sent.is_set()

        wait_until(done, timeout=self.total / 10 + stall, message="every event produced")


def loaded_ids(dsn: str, table: str) -> tuple[int, int]:
    """(rows, distinct ids) in ``table``; (0, 0) before the sink created it."""
    with psycopg.connect(dsn) as con:
        exists = con.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if exists is None or exists[0] is None:
            return 0, 0
        row = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def assert_every_event_once(dsn: str, table: str, total: int, half_id_column: str) -> None:
    """Events ``id`` 0..total-1, each loaded once, with ``half_id_column`` = id * 0.5; drops the table."""
    assert loaded_ids(dsn, table) == (total, total), "exactly once: every event once, none twice"
    with psycopg.connect(dsn) as con:
        row = con.execute(f"SELECT sum(id), sum({half_id_column}) FROM {table}").fetchone()
        assert row is not None
        assert int(row[0]) == total * (total - 1) // 2
        assert float(row[1]) == pytest.approx(sum(i * 0.5 for i in range(total)))
        con.execute(f"DROP TABLE {table}")


def new_topic(bootstrap: str, partitions: int) -> str:
    topic = f"e2e.events.{uuid.uuid4().hex[:8]}"
    ensure_topics(secure_kafka.operator_settings(bootstrap), [TopicSpec(topic, partitions)])
    return topic


def register(system: System, document: dict, tenant: str = DEFAULT_TENANT) -> str:
    spec_part, triggers = split_definition_document(document)
    spec = parse_spec(spec_part)
    definition = PipelineDefinition(name=spec.name, spec=spec, triggers=triggers, tenant=tenant)
    system.client.publish(Topics.DEFINITIONS, spec.name, definition)
    return spec.name


def read_all(system: System, topic: str, model: type[C], keep: Callable[[C], bool]) -> list[C]:
    """Every committed record of the system's ``topic`` (decoded as ``model``) that ``keep`` accepts, read
    as the operator (on a secured broker the cli user reads only the topics its commands read)."""
    kafka = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
    operator = AoetlClient(load_settings(ServiceSettings, kafka=kafka, topic_suffix=system.suffix))
    try:
        with operator.reader(topic, from_beginning=True) as reader:
            return [v for _, v in reader.drain({topic: model}) if isinstance(v, model) and keep(v)]
    finally:
        operator.close()


def requests_for(system: System, run_id: str) -> list[PipelineRequest]:
    return read_all(system, Topics.REQUESTS, PipelineRequest, lambda r: r.run_id == run_id)


def results_of(system: System, pipeline: str) -> list[PipelineResult]:
    return read_all(system, Topics.RESULTS, PipelineResult, lambda r: r.pipeline == pipeline)


EVENT_STEPS = [{"op": "cast", "columns": {"id": "int64", "amount": "float64"}}]


# --------------------------------------------------------------------------------- topic triggers
def test_a_matching_topic_event_starts_its_definition_with_parameters(
    system: System, kafka_bootstrap: str, tmp_path: Path
):
    topic = new_topic(kafka_bootstrap, 2)
    db = tmp_path / "triggered.duckdb"
    name = register(
        system,
        {
            "name": f"on-order-{uuid.uuid4().hex[:6]}",
            "source": {"type": "event"},
            "transforms": EVENT_STEPS,
            "destination": {"type": "duckdb", "path": str(db), "table": "orders"},
            "triggers": [
                {
                    "type": "topic",
                    "topic": topic,
                    "where": {"kind": "order"},
                    "parameters": {"customer": "customer.id"},
                    "start_from": "earliest",
                }
            ],
        },
        tenant="acme",
    )
    events = EventProducer(kafka_bootstrap, topic)
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        events.send({"kind": "refund", "id": 0, "amount": 1.0}, key="k")
        events.send({"kind": "order", "id": 7, "amount": 12.5, "customer": {"id": "c-9"}}, key="k")
        events.flush()
        partition, offset, _ = next(d for d in events.delivered if d[2]["kind"] == "order")
        run_id = topic_run_id(name, topic, partition, offset)
        result = await_result(reader, run_id)
    assert_completed(result)
    assert result.pipeline == name and stage(result, Stage.LOAD).rows_out == 1
    (request,) = requests_for(system, run_id)
    assert request.trigger.kind is TriggerKind.EVENT and request.trigger.source == topic
    assert request.trigger.delivery_id == f"{topic}/{partition}/{offset}"
    assert request.parameters == {"customer": "c-9"}
    assert request.tenant == "acme"  # the definition's: the run is its tenant's
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT id, amount FROM orders").fetchall() == [(7, 12.5)]


def test_a_window_of_events_starts_one_run_that_loads_them_all(
    system: System, kafka_bootstrap: str, tmp_path: Path
):
    topic = new_topic(kafka_bootstrap, 1)
    db = tmp_path / "window.duckdb"
    name = register(
        system,
        {
            "name": f"windowed-{uuid.uuid4().hex[:6]}",
            "source": {"type": "event"},
            "transforms": EVENT_STEPS,
            "destination": {"type": "duckdb", "path": str(db), "table": "orders"},
            "triggers": [
                {
                    "type": "topic",
                    "topic": topic,
                    "window": {"events": 5, "seconds": 300},
                    "start_from": "earliest",
                }
            ],
        },
    )
    events = EventProducer(kafka_bootstrap, topic)
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        for i in range(5):
            events.send({"id": i, "amount": i * 1.5})
        events.flush()
        first_offset = min(offset for _, offset, _ in events.delivered)
        result = await_result(reader, topic_run_id(name, topic, 0, first_offset))
    assert_completed(result)
    assert stage(result, Stage.LOAD).rows_out == 5
    with duckdb.connect(str(db), read_only=True) as con:
        assert sorted(r[0] for r in con.execute("SELECT id FROM orders").fetchall()) == [0, 1, 2, 3, 4]
    assert len(results_of(system, name)) == 1


# ---------------------------------------------------------------------------- continuous pipeline
POISON_EVENTS = [b"not json", b"[1, 2]"]


def test_a_continuous_pipeline_loads_every_event_exactly_once_across_stop_and_resume(
    system: System, kafka_bootstrap: str, postgres_dsn: str
):
    total = 3000
    topic = new_topic(kafka_bootstrap, 3)
    table = f"e2e_stream_{uuid.uuid4().hex[:8]}"
    spec = parse_spec(
        {
            "name": f"clicks-{uuid.uuid4().hex[:6]}",
            "source": {"type": "kafka", "topic": topic, "format": "json"},
            "transforms": [
                *EVENT_STEPS,
                {"op": "derive", "column": "double_amount", "expr": "amount * 2"},
            ],
            "quality": [{"rule": "not_null", "columns": ["id"], "on_fail": "warn"}],
            "destination": {"type": "postgres", "table": table},
            "run": {"batch_rows": 500},
        }
    )
    events = EventProducer(kafka_bootstrap, topic)

    def loaded() -> tuple[int, int]:
        return loaded_ids(postgres_dsn, table)

    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        first = system.client.submit(spec)
        stream = PacedStream(
            events, total, lambda i: ({"id": i, "user": f"u{i % 37}", "amount": i * 0.25}, f"u{i % 37}")
        ).start()
        wait_until(lambda: stream.produced > total // 3, 60, message="a third of the events produced")
        wait_until(lambda: loaded()[0] > 0, 60, message="the first rows loaded while events arrive")
        for poison in POISON_EVENTS:  # amid the stream: read in one window with events
            events.send_raw(poison)
        system.client.stop(first.run_id)
        stopped = await_result(reader, first.run_id)
        assert stopped.status is RunStatus.CANCELLED, stopped.errors
        # events keep arriving while the pipeline is stopped; the next run resumes at its offsets
        second = system.client.submit(spec)
        duplicate = system.client.submit(spec)
        rejected = await_result(reader, duplicate.run_id)
        assert rejected.status is RunStatus.REJECTED
        assert [e.error_class for e in rejected.errors] == ["AlreadyRunning"]
        stream.wait_sent()
        wait_until(lambda: loaded() == (total, total), 120, interval=0.5, message=f"{total} rows loaded")
        system.client.stop(second.run_id)
        final = await_result(reader, second.run_id)
    assert final.status is RunStatus.CANCELLED
    assert_every_event_once(postgres_dsn, table, total, "double_amount")
    with system.client.reader(Topics.DEAD_LETTERS, from_beginning=True) as letters:
        mine = [
            v
            for _, v in letters.drain({Topics.DEAD_LETTERS: DeadLetter})
            if isinstance(v, DeadLetter) and v.origin.topic == topic
        ]
    assert sorted(v.payload for v in mine) == sorted(POISON_EVENTS), "each dead-lettered once, as read"
    assert {(v.stage, v.run_id in (first.run_id, second.run_id)) for v in mine} == {(Stage.EXTRACT, True)}
