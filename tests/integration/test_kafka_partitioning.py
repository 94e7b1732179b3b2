"""Co-partitioning holds across client libraries: the gateway sends requests with aiokafka, the other
services send events with confluent-kafka, and the orchestrator relies on a run id's request and events
being on the same partition number. Checked on the real broker with many keys, since one key can agree
by chance."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Message

from shared.kafka.admin import ensure_topics
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration

KEYS = [uuid.uuid4().hex for _ in range(60)]


def _confluent_partitions(clients: KafkaClients, topic: str) -> dict[str, int]:
    producer = clients.producer()
    placed: dict[str, int] = {}

    def on_delivery(err: object, msg: Message) -> None:
        assert err is None, err
        placed[(msg.key() or b"").decode()] = msg.partition() or 0

    for key in KEYS:
        producer.produce(topic, key=key.encode(), value=b"x", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return placed


async def _aiokafka_partitions(clients: KafkaClients, topic: str) -> dict[str, int]:
    producer = clients.aio_producer()
    await producer.start()
    try:
        return {key: (await producer.send_and_wait(topic, b"x", key=key.encode())).partition for key in KEYS}
    finally:
        await producer.stop()


def test_a_key_lands_on_the_same_partition_from_either_client_library(kafka_bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic = f"test.partitioning.{uuid.uuid4().hex}"
    ensure_topics(settings, [TopicSpec(topic, 6, {})])
    clients = KafkaClients(settings)
    from_confluent = _confluent_partitions(clients, topic)
    from_aiokafka = asyncio.run(_aiokafka_partitions(clients, topic))
    assert len(set(from_confluent.values())) > 1  # the keys really spread: agreement is not trivial
    assert from_confluent == from_aiokafka
