"""Issue 10: a redelivered batch counts once everywhere a run's progress is read. Every service is a
process on the real broker and PostgreSQL; a continuous run loads a topic, then a second BATCH_LOADED
for one of its batches (same batch id, ``applied=false``: what load's redelivery produces) is put on the
system's events topic. The gateway's ``GET /runs/{id}``, ``aoetl status`` while the run goes on, and the
run's PipelineResult once it is stopped all count that batch once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from shared.contracts import BatchLoaded, EventKind, PipelineResult, RunEvent, RunStatus, Stage
from shared.kafka.clients import make_producer
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import await_result, stage
from tests.e2e.test_streaming import EVENT_STEPS, EventProducer, loaded_ids, new_topic
from tests.helpers import wait_until
from tests.integration.test_gateway import RunningGateway, start_gateway
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e

TOTAL = 1200


@pytest.fixture
def gateway(system: System, kafka_bootstrap: str) -> Iterator[RunningGateway]:
    running = start_gateway(kafka_bootstrap, system.suffix)
    yield running
    running.stop()


def run_events(system: System, run_id: str) -> list[RunEvent]:
    return system.client.run_events(run_id)  # the whole (private) events topic, read back


def publish_at(bootstrap: str, system: System, topic: str, key: str, event: RunEvent) -> tuple[int, int]:
    """Produce as the services do (same client factory, so the same partition as the run's events) and
    say where the record landed: (partition, offset)."""
    landed: list[tuple[int, int]] = []
    producer = make_producer(secure_kafka.operator_settings(bootstrap))
    producer.produce(
        system.client.topic(topic),
        system.client.serde.encode(event),
        key=key,
        on_delivery=lambda error, msg: (
            landed.append((msg.partition(), msg.offset())) if error is None else None
        ),
    )
    assert producer.flush(30) == 0 and landed, "the redelivered event was not acknowledged"
    return landed[0]


def committed_past(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> bool:
    """Whether ``group`` committed beyond ``offset``: it has consumed (and answered) that record."""
    consumer = Consumer(secure_kafka.operator_config(bootstrap, group_id=group, enable_auto_commit=False))
    try:
        (committed,) = consumer.committed([TopicPartition(topic, partition)], timeout=10)
        return committed.offset > offset
    finally:
        consumer.close()


def test_a_redelivered_batch_counts_once_in_the_gateway_the_cli_and_the_result(
    system: System, gateway: RunningGateway, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    topic = new_topic(kafka_bootstrap, 2)
    table = f"e2e_progress_{uuid.uuid4().hex[:8]}"
    spec = parse_spec(
        {
            "name": f"progress-{uuid.uuid4().hex[:6]}",
            "source": {"type": "kafka", "topic": topic, "format": "json"},
            "transforms": EVENT_STEPS,
            "destination": {"type": "postgres", "table": table},
            "run": {"batch_rows": 200},
        }
    )
    producer = EventProducer(kafka_bootstrap, topic)
    for i in range(TOTAL):
        producer.send({"id": i, "amount": i * 0.5}, key=f"k{i % 11}")
    producer.flush()
    run = system.client.submit(spec)
    wait_until(lambda: loaded_ids(postgres_dsn, table) == (TOTAL, TOTAL), 120, 0.5, f"{TOTAL} rows loaded")

    def every_load_reported() -> list[RunEvent]:
        found = [e for e in run_events(system, run.run_id) if e.kind is EventKind.BATCH_LOADED]
        return found if sum(e.rows_out for e in found) == TOTAL else []

    # every batch's BATCH_LOADED is in once the rows are: the truth the readers must agree with
    first_loads = wait_until(every_load_reported, 60, message="a BATCH_LOADED for every batch")
    batches = {e.batch_id for e in first_loads}
    assert len(batches) == len(first_loads) > 1 and all(
        e.payload == BatchLoaded(applied=True) for e in first_loads
    )

    # load's redelivery of a batch: the sink had applied it, answers with its ledger's rows, no time
    original = first_loads[0]
    redelivered = original.model_copy(
        update={
            "event_id": uuid.uuid4().hex,
            "rows_rejected": 0,
            "duration_ms": 0,
            "payload": BatchLoaded(applied=False),
            "instance": "load-redelivery",
        }
    )
    partition, offset = publish_at(kafka_bootstrap, system, Topics.EVENTS, run.run_id, redelivered)
    events = run_events(system, run.run_id)
    assert [e.event_id for e in events].count(redelivered.event_id) == 1

    # the gateway
    def view() -> dict:
        answer = httpx.get(f"{gateway.url}/runs/{run.run_id}", headers=gateway.auth)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def gateway_saw(events_at_least: int) -> dict:
        current = view()
        return current if current["events"] >= events_at_least else {}

    seen = wait_until(lambda: gateway_saw(len(events)), 60, message="the gateway to read the redelivery")
    assert seen["status"] == "RUNNING"
    assert (seen["stages"]["load"]["batches"], seen["stages"]["load"]["rows_out"]) == (len(batches), TOTAL)

    # the CLI, while the run goes on
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_TOPIC_SUFFIX": system.suffix,
        "COLUMNS": "200",
        **system.cli_env,
    }
    shown = CliRunner().invoke(app, ["status", run.run_id], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"{len(batches)} batches ({TOTAL:,} rows) loaded" in shown.output, shown.output

    # the result: once the orchestrator has read the redelivery, stop the run
    group = f"aoetl-orchestrator{system.suffix}"
    events_topic = system.client.topic(Topics.EVENTS)
    wait_until(
        lambda: committed_past(kafka_bootstrap, group, events_topic, partition, offset),
        60,
        message="the orchestrator to read the redelivery",
    )
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        system.client.stop(run.run_id)
        result: PipelineResult = await_result(reader, run.run_id)
    assert result.status is RunStatus.CANCELLED, result.errors
    load = stage(result, Stage.LOAD)
    assert (load.batches, load.rows_out) == (len(batches), TOTAL)
    assert stage(result, Stage.TRANSFORM).batches == len(batches)

    final = wait_until(
        lambda: view()["result"] is not None and view(), 60, message="the gateway to read the result"
    )
    assert final["status"] == "CANCELLED" and final["stages"]["load"]["batches"] == len(batches)
    assert CliRunner().invoke(app, ["status", run.run_id], env=env).exit_code == 4  # CANCELLED, the result
