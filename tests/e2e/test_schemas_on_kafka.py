"""The schemas topic is enough to read the system's output: every service publishes the writer schemas at
start-up, and a consumer that knows nothing but that topic decodes every result, alert and dead letter.

The decoder below is what a consumer in another language would write: plain fastavro and the Kafka
client, no project code. It reads the Avro single-object header (``C3 01`` + the 8-byte CRC-64-AVRO
fingerprint), looks the fingerprint's hex up as a key of the schemas topic, and reads the body with that
schema alone (the complete expanded schema: nothing else to resolve)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

from shared.contracts import Alert, DeadLetter, PipelineRequest, PipelineResult, RunStatus
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.helpers import wait_until
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e

SINGLE_OBJECT_MAGIC = b"\xc3\x01"


@pytest.fixture(scope="module")
def gateway(system: System) -> Iterator[None]:
    """A gateway on the shared system for this module: it publishes the schemas at start-up too."""
    started = system.supervisor.start("gateway", 1, env={"AOETL_API_PORT": "0"})
    try:
        system.supervisor.wait_ready(started, timeout=90)
        yield
    finally:
        system.supervisor.stop("gateway")


# ------------------------------------------------------------------- the decoder: no project code
def read_to_end(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of ``topic``, from the beginning to the end it has now (committed data only)."""
    consumer = Consumer(
        secure_kafka.operator_config(
            bootstrap,
            group_id=f"outside-reader-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            enable_partition_eof=True,
            isolation_level="read_committed",
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending, records = set(partitions), []
        while pending:
            msg = consumer.poll(10.0)
            assert msg is not None, f"{topic}: no message nor end of partition within 10 s"
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                pending.discard(msg.partition())
                continue
            records.append((msg.key(), msg.value()))
        return records
    finally:
        consumer.close()


def schemas_from_topic(bootstrap: str, topic: str) -> dict[str, Any]:
    """Fingerprint hex -> parsed writer schema, for every schema on the (compacted) schemas topic."""
    schemas: dict[str, Any] = {}
    for key, value in read_to_end(bootstrap, topic):
        assert key is not None and value is not None
        parsed = fastavro.parse_schema(json.loads(value))
        # the value is the schema its key names: a reader can trust it
        assert fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO") == key.decode()
        schemas[key.decode()] = parsed
    return schemas


def decode(value: bytes, schemas: dict[str, Any]) -> dict[str, Any]:
    assert value[:2] == SINGLE_OBJECT_MAGIC, f"not single-object encoded: {value[:10]!r}"
    writer = value[2:10].hex()
    assert writer in schemas, f"writer schema {writer} is not on the schemas topic"
    body = io.BytesIO(value[10:])
    record = fastavro.schemaless_reader(body, schemas[writer])
    assert body.tell() == len(value) - 10, "bytes left after the record"
    assert isinstance(record, dict)
    return record


# ---------------------------------------------------------------------------------------- helpers
def write_orders(path: Path, rows: int) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "customer", "amount"])
        for i in range(rows):
            writer.writerow([i, "" if i % 10 == 0 else f"C{i % 7}", f"{i * 1.5:.2f}"])


def submit(system: System, spec: dict[str, Any]) -> str:
    request = PipelineRequest(spec=parse_spec(spec), requested_by="schemas-test")
    system.client.publish(Topics.REQUESTS, request.run_id, request)
    return request.run_id


# ------------------------------------------------------------------------------------------ test
@pytest.mark.usefixtures("gateway")
def test_results_alerts_and_dead_letters_decode_with_the_schemas_topic_alone(
    system: System, kafka_bootstrap: str, tmp_path: Path
) -> None:
    for log in sorted((system.state_dir / "logs").glob("*.log")):
        published = f"schemas on {system.client.topic(Topics.SCHEMAS)}:"
        assert published in log.read_text(), f"{log.name}: no schema publication at start-up"

    write_orders(tmp_path / "orders.csv", 200)
    with system.client.reader(
        Topics.RESULTS, Topics.ALERTS, Topics.DEAD_LETTERS, from_beginning=False
    ) as reader:
        quarantined = submit(
            system,
            {
                "name": "schemas-quarantine",
                "source": {"type": "csv", "path": str(tmp_path / "orders.csv")},
                "transforms": [{"op": "cast", "columns": {"id": "int64", "amount": "float64"}}],
                "quality": [
                    {"rule": "not_null", "columns": ["customer"], "on_fail": "quarantine", "name": "customer"}
                ],
                "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
            },
        )
        failing = submit(
            system,
            {
                "name": "schemas-missing",
                "source": {"type": "csv", "path": str(tmp_path / "nope-*.csv")},
                "destination": {"type": "jsonl", "path": str(tmp_path / "out2")},
            },
        )
        # a poison message: not Avro at all, dead-lettered by the orchestrator
        poison = Producer(secure_kafka.operator_config(kafka_bootstrap))
        poison.produce(system.client.topic(Topics.REQUESTS), key=b"poison", value=b"\x00not avro")
        assert poison.flush(30) == 0

        seen: dict[str, list[Any]] = {"results": [], "alerts": [], "letters": []}

        def everything_arrived() -> bool:
            types = {Topics.RESULTS: PipelineResult, Topics.ALERTS: Alert, Topics.DEAD_LETTERS: DeadLetter}
            for _, value in reader.poll(types):
                kind = {PipelineResult: "results", Alert: "alerts", DeadLetter: "letters"}[type(value)]
                seen[kind].append(value)
            results = {r.run_id: r.status for r in seen["results"]}
            return (
                results.get(quarantined) is RunStatus.COMPLETED
                and results.get(failing) is RunStatus.FAILED
                and any(a.run_id == failing for a in seen["alerts"])
                and any(d.run_id == quarantined for d in seen["letters"])
                and any(d.payload == b"\x00not avro" for d in seen["letters"])
            )

        wait_until(everything_arrived, timeout=120, message="results, an alert and dead letters")

    schemas = schemas_from_topic(kafka_bootstrap, system.client.topic(Topics.SCHEMAS))
    decoded: dict[str, list[dict[str, Any]]] = {}
    for name in (Topics.RESULTS, Topics.ALERTS, Topics.DEAD_LETTERS):
        records = read_to_end(kafka_bootstrap, system.client.topic(name))
        decoded[name] = [decode(value, schemas) for _, value in records if value is not None]
        assert len(decoded[name]) == len(records) > 0, f"{name}: every message decodes"

    statuses = {r["run_id"]: r["status"] for r in decoded[Topics.RESULTS]}
    assert statuses[quarantined] == "COMPLETED" and statuses[failing] == "FAILED"
    assert any(a["run_id"] == failing and a["kind"] == "RUN_FAILED" for a in decoded[Topics.ALERTS])
    letters = decoded[Topics.DEAD_LETTERS]
    assert any(d["run_id"] == quarantined and d["rule"] == "customer" for d in letters)
    assert any(d["payload"] == b"\x00not avro" for d in letters)
