"""``TransactionalSummarySink`` against the real broker: a flush of run summaries is one transaction per
events partition, seen whole by ``read_committed`` readers; a writer whose partition moved (another sink
with the same transactional id started) is fenced, does not take the id back, and writes nothing more,
while the new owner's summaries commit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka.admin import AdminClient

from services.monitor.history import SummariesFenced, TransactionalSummarySink
from shared.avro import AvroSerde
from shared.contracts import RunStatus, RunSummary
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

SERDE = AvroSerde()


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"runs-history-{uuid.uuid4().hex[:10]}"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [TopicSpec(name, 1)])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    wait_until(lambda: name in admin.list_topics(timeout=10).topics, message=f"the topic {name}")
    yield name
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result(timeout=30)


def on_topic(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[tuple[str, str | None]]:
    """(key, status) of each summary on ``topic`` in log order, as a consumer with ``isolation`` sees them."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: list[tuple[str, str | None]] = []
    try:
        while True:
            msg = consumer.poll(10)
            assert msg is not None, f"{topic} not read to its end"
            error = msg.error()
            if error is not None and error.code() == ConfluentError._PARTITION_EOF:
                return seen
            assert error is None, error
            summary = SERDE.decode(msg.value() or b"", RunSummary)
            assert (msg.key() or b"").decode() == summary.run_id
            seen.append((summary.run_id, summary.status.value if summary.status else None))
    finally:
        consumer.close()


def test_a_flush_is_one_transaction_and_a_fenced_writer_writes_nothing_more(
    kafka_bootstrap: str, topic: str
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)

    def sink() -> TransactionalSummarySink:
        return TransactionalSummarySink(kafka, topic, f"{topic}-monitor-runs-", SERDE, timeout_s=10)

    async def scenario() -> None:
        old_owner, new_owner = sink(), sink()
        try:
            await old_owner.commit(2, [RunSummary(run_id="r1"), RunSummary(run_id="r2")])
            # partition 2 moves: the new owner's first commit starts a producer with the same id (the fence)
            await new_owner.commit(2, [RunSummary(run_id="r1", status=RunStatus.COMPLETED)])
            with pytest.raises(SummariesFenced):
                await old_owner.commit(2, [RunSummary(run_id="r2", status=RunStatus.FAILED)])
            assert old_owner._producers == {}, "dropped, not started again (that would fence the new owner)"
            await new_owner.commit(2, [RunSummary(run_id="r2", status=RunStatus.COMPLETED)])
            await old_owner.commit(5, [RunSummary(run_id="r3")])  # another partition's id is its own
        finally:
            await old_owner.close()
            await new_owner.close()

    asyncio.run(scenario())
    assert on_topic(kafka_bootstrap, topic) == [
        ("r1", None),
        ("r2", None),
        ("r1", "COMPLETED"),
        ("r2", "COMPLETED"),
        ("r3", None),
    ]
