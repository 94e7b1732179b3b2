"""Every contract survives the real broker: produce with confluent_kafka, consume, decode, compare."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.avro.serde import AvroSerde
from shared.contracts import MESSAGE_TYPES
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from tests.helpers import wait_until
from tests.unit.test_contracts import rich_messages

pytestmark = pytest.mark.integration


def produce_all(bootstrap: str, topic: str, values: list[bytes]) -> None:
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for index, value in enumerate(values):
        producer.produce(topic, key=str(index).encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0 and not failures, failures


def consume(bootstrap: str, topic: str, count: int) -> list[Message]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    received: list[Message] = []

    def all_received() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None:
            assert msg.error() is None, msg.error()
            received.append(msg)
        return len(received) >= count

    try:
        wait_until(all_received, timeout=30, message=f"{count} messages on {topic}")
    finally:
        consumer.close()
    return received


def test_every_contract_round_trips_through_the_broker(kafka_bootstrap: str) -> None:
    topic = f"test.contracts.{uuid.uuid4().hex}"
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [TopicSpec(topic, 1, {"max.message.bytes": str(16 * 1024 * 1024)})],
    )
    serde = AvroSerde()
    messages = rich_messages()
    try:
        produce_all(kafka_bootstrap, topic, [serde.encode(m) for m in messages])
        received = consume(kafka_bootstrap, topic, len(messages))
        by_name = {m.avro_name: m for m in MESSAGE_TYPES}
        for msg, original in zip(received, messages, strict=True):
            value = msg.value()
            assert value is not None
            # the header alone says which contract it is
            writer = serde.catalog.entry_by_fingerprint(value[2:10])
            assert writer is not None
            model_type = by_name[writer.name]
            assert model_type is type(original)
            assert serde.decode(value, model_type) == original
    finally:
        AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([topic])
