"""``ExactlyOnceAlerts`` against the real broker, without a kill: the alerts topic decides what was sent.

A publisher that starts afresh (a restarted monitor, which remembers nothing) does not send an alert its
predecessor committed; one that fences a zombie's open transaction (the same transactional id) sends the
alert once, the zombie's commit fails, and the zombie then finds the alert sent. Consumers that read
``read_committed`` see each alert once; only a ``read_uncommitted`` one sees the aborted attempt.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka.admin import AdminClient

from services.monitor.alerts import ExactlyOnceAlerts, alert_identity
from shared.avro import AvroSerde
from shared.contracts import Alert, AlertKind, Severity
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

SERDE = AvroSerde()


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"alerts-once-{uuid.uuid4().hex[:10]}"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [TopicSpec(name, 1)])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    wait_until(lambda: name in admin.list_topics(timeout=10).topics, message=f"the topic {name}")
    yield name
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result(timeout=30)


def alert(run_id: str, kind: AlertKind = AlertKind.QUALITY_THRESHOLD) -> Alert:
    return Alert(kind=kind, severity=Severity.WARNING, message=f"{kind.value} of {run_id}", run_id=run_id)


def on_topic(bootstrap: str, topic: str, isolation: str = "read_committed") -> Counter[str]:
    """The identities of the alerts on ``topic``, as a consumer with ``isolation`` sees them."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: Counter[str] = Counter()
    try:
        while True:
            msg = consumer.poll(10)
            assert msg is not None, f"{topic} not read to its end"
            error = msg.error()
            if error is not None and error.code() == ConfluentError._PARTITION_EOF:
                return seen
            assert error is None, error
            seen[alert_identity(SERDE.decode(msg.value() or b"", Alert))] += 1
    finally:
        consumer.close()


class Publishers:
    """``ExactlyOnceAlerts`` on one topic and transactional id, as many monitors would each make one."""

    def __init__(self, bootstrap: str, topic: str):
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        self.topic = topic
        self.transactional_id = f"{topic}-monitor-alerts"
        self.made: list[ExactlyOnceAlerts] = []

    def new(self) -> ExactlyOnceAlerts:
        publisher = ExactlyOnceAlerts(self.kafka, self.topic, self.transactional_id, SERDE, timeout_s=10)
        self.made.append(publisher)
        return publisher

    async def close(self) -> None:
        for publisher in self.made:
            await publisher.close()


def test_a_restarted_publisher_does_not_send_what_its_predecessor_sent(
    kafka_bootstrap: str, topic: str
) -> None:
    async def scenario() -> None:
        publishers = Publishers(kafka_bootstrap, topic)
        try:
            first = publishers.new()
            assert await first.publish(alert("r1")) is True
            assert await first.publish(alert("r1")) is False
            # Left as it is (not closed), as a killed process leaves it; the next one knows nothing.
            restarted = publishers.new()
            assert await restarted.publish(alert("r1")) is False  # another message and alert_id, same alert
            assert await restarted.publish(alert("r1", AlertKind.RUN_FAILED)) is True
            assert await restarted.publish(alert("r2")) is True
        finally:
            await publishers.close()

    asyncio.run(scenario())
    assert on_topic(kafka_bootstrap, topic) == Counter(
        {"QUALITY_THRESHOLD|r1": 1, "RUN_FAILED|r1": 1, "QUALITY_THRESHOLD|r2": 1}
    )


def test_a_zombie_transaction_is_fenced_and_the_alert_is_seen_once(kafka_bootstrap: str, topic: str) -> None:
    async def scenario() -> None:
        publishers = Publishers(kafka_bootstrap, topic)
        try:
            zombie = publishers.new()
            assert await zombie.publish(alert("r0")) is True
            # The zombie's next alert is written, and its commit held back (it lost its partition while
            # sending, or hangs) ...
            producer = zombie._producer
            assert producer is not None
            commit, written, may_commit = producer.commit_transaction, asyncio.Event(), asyncio.Event()

            async def held_commit() -> None:
                written.set()
                await may_commit.wait()
                await commit()

            producer.commit_transaction = held_commit
            attempt = asyncio.create_task(zombie.publish(alert("r1")))
            await written.wait()
            # ... when the new owner raises the same alert: its fence aborts the zombie's transaction.
            assert await publishers.new().publish(alert("r1")) is True
            may_commit.set()
            # The zombie's commit fails; starting over on a new producer, it finds the alert sent.
            assert await attempt is False
            assert await zombie.publish(alert("r2")) is True
        finally:
            await publishers.close()

    asyncio.run(scenario())
    identities = {"QUALITY_THRESHOLD|r0": 1, "QUALITY_THRESHOLD|r1": 1, "QUALITY_THRESHOLD|r2": 1}
    assert on_topic(kafka_bootstrap, topic) == Counter(identities)
    # Why every consumer of alerts reads committed data only: the aborted attempt is on the topic too.
    assert on_topic(kafka_bootstrap, topic, "read_uncommitted")["QUALITY_THRESHOLD|r1"] == 2


def test_the_same_alert_raised_twice_at_once_is_sent_once(kafka_bootstrap: str, topic: str) -> None:
    async def scenario() -> list[bool]:
        publishers = Publishers(kafka_bootstrap, topic)
        try:
            publisher = publishers.new()
            return list(await asyncio.gather(publisher.publish(alert("r1")), publisher.publish(alert("r1"))))
        finally:
            await publishers.close()

    assert sorted(asyncio.run(scenario())) == [False, True]
    assert on_topic(kafka_bootstrap, topic) == Counter({"QUALITY_THRESHOLD|r1": 1})
