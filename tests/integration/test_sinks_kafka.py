"""Kafka sink against the real broker: rows arrive as Avro single-object records whose schema (derived
from the Arrow schema) is published on the schemas topic; redelivery to the same sink is skipped."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pyarrow as pa
import pytest
from confluent_kafka import Consumer

from services.load.sinks import WriteResult
from services.load.sinks.avro_rows import MAGIC, avro_schema_for, decode_row
from services.load.sinks.kafka_topic import KafkaSink
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from shared.spec.models import KafkaDestination
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def consume_all(bootstrap: str, topic: str, count: int) -> list[tuple[str, bytes, dict[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: list[tuple[str, bytes, dict[str, bytes]]] = []

    def drained() -> bool:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            assert msg.error() is None, msg.error()
            got.append((msg.key().decode(), msg.value(), dict(msg.headers() or [])))
        return len(got) >= count

    try:
        wait_until(drained, timeout=60, message=f"{count} records on {topic}")
    finally:
        consumer.close()
    return got


def test_rows_are_avro_records_keyed_by_batch_and_row(kafka_bootstrap: str):
    suffix = uuid.uuid4().hex[:8]
    topic, schemas_topic = f"test.sink.rows.{suffix}", f"test.sink.schemas.{suffix}"
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), [TopicSpec(topic, 3), TopicSpec(schemas_topic, 1)]
    )
    batch = pa.table(
        {
            "id": pa.array([1, 2, 2], pa.int64()),
            "name": ["a", None, "c"],
            "price": [1.5, 2.5, None],
            "day": pa.array([dt.date(2024, 1, 2)] * 3),
            "at": pa.array(
                [dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)] * 3, pa.timestamp("us", tz="UTC")
            ),
            "amount": pa.array([Decimal("1.25"), None, Decimal("-3.10")], pa.decimal128(8, 2)),
            "Weird Col": [True, False, None],
        }
    )
    sink = KafkaSink(
        KafkaDestination(topic=topic),
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        schemas_topic=schemas_topic,
    )
    try:
        first = sink.write("run-k", "task-1:0", batch)
        assert sink.write("run-k", "task-1:0", batch) == WriteResult(False, 0, 0)  # bytes: unknown
        second = sink.write("run-k", "task-1:1", batch, dedupe_keys=["id"])
        assert sink.write("run-k", "task-1:2", batch, dedupe_keys=["id"]) == WriteResult(True, 0, 3, 0)
        sink.finalize("run-k")
    finally:
        sink.close()

    [(fingerprint_hex, schema_value, _)] = consume_all(kafka_bootstrap, schemas_topic, 1)
    schema = json.loads(schema_value)
    assert schema == avro_schema_for(batch.schema, topic)
    assert schema["namespace"] == "io.aoetl.rows"

    records = consume_all(kafka_bootstrap, topic, 5)
    keys = ["task-1:0:0", "task-1:0:1", "task-1:0:2", "task-1:1:0", "task-1:1:1"]
    assert sorted(key for key, _, _ in records) == keys
    by_key = {key: (value, headers) for key, value, headers in records}
    # the bytes reported are the produced record values of each batch
    sizes = {
        batch_id: sum(len(by_key[k][0]) for k in keys if k.startswith(f"{batch_id}:"))
        for batch_id in ("task-1:0", "task-1:1")
    }
    assert first == WriteResult(True, 3, 0, sizes["task-1:0"])
    assert second == WriteResult(True, 2, 1, sizes["task-1:1"])
    value, headers = by_key["task-1:0:2"]
    assert value[:2] == MAGIC and value[2:10].hex() == fingerprint_hex
    assert headers == {"aoetl.run_id": b"run-k", "aoetl.batch_id": b"task-1:0"}
    assert decode_row(value, schema) == {
        "id": 2,
        "name": "c",
        "price": None,
        "day": dt.date(2024, 1, 2),
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        "amount": Decimal("-3.10"),
        "Weird_Col": None,
    }
