"""What the fault tests and the soak read of Kafka to judge a fault's effect, outside the system under test:
the committed records of a topic (read_committed, aborted transactions left out, as a downstream stage sees
them), a consumer group's state and what it has still to consume, and the group surgery that makes it
consume everything again (a duplicate delivery on purpose). Each is its own client with a throwaway group
(or the group named, for its committed offsets), so reading never moves the system's offsets.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.contracts import Alert
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.helpers import wait_until


def committed_keys(kafka_bootstrap: str, topic: str, timeout: float = 60.0) -> Counter[bytes]:
    """How often each key occurs among the *committed* records of ``topic`` (read_committed, from the
    start to the current end): the view a downstream stage gets, with aborted transactions left out."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"faults-keys-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assigned = [TopicPartition(topic, p, 0) for p in partitions]
        consumer.assign(assigned)
        pending = {tp.partition for tp in assigned}
        keys: Counter[bytes] = Counter()
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout}s"
            for msg in consumer.consume(500, 0.5):
                error = msg.error()
                if error is None:
                    keys[msg.key() or b""] += 1
                elif error.code() == error._PARTITION_EOF:
                    pending.discard(msg.partition() or 0)
        return keys
    finally:
        consumer.close()


def group_state(kafka_bootstrap: str, group: str) -> tuple[ConsumerGroupState, int]:
    """The group's state and its number of members."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return description.state, len(description.members)


def wait_group(kafka_bootstrap: str, group: str, members: int, timeout: float = 60.0) -> None:
    """Until the group is stable with ``members`` members (or empty, for 0): a rebalance has finished."""
    want = ConsumerGroupState.EMPTY if members == 0 else ConsumerGroupState.STABLE

    def settled() -> bool:
        state, count = group_state(kafka_bootstrap, group)
        return state is want and count == members

    wait_until(
        settled, timeout=timeout, interval=0.25, message=f"group {group} stable with {members} members"
    )


def rewind_group(kafka_bootstrap: str, group: str, topics: list[str]) -> int:
    """Set an (empty) group's offsets on ``topics`` back to the first record; returns how many records
    the group will be handed again."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"faults-probe-{uuid.uuid4().hex}"})
    try:
        offsets, again = [], 0
        for topic in topics:
            for p in probe.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                offsets.append(TopicPartition(topic, p, low))
                again += high - low
    finally:
        probe.close()
    future = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])[group]
    future.result()
    return again


def uncommitted_records(kafka_bootstrap: str, group: str, topics: list[str], timeout: float = 60.0) -> int:
    """Committed records of ``topics`` past the group's committed offsets: what the group has still to
    process. Read, not computed from watermarks, because transaction markers occupy offsets too."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        committed = consumer.committed(parts, timeout=10)
        # Never committed: the group would start from the beginning (auto.offset.reset=earliest).
        consumer.assign([TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in committed])
        pending = {(tp.topic, tp.partition) for tp in committed}
        count = 0
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"{topics} not read to their end in {timeout}s"
            for msg in consumer.consume(500, 0.5):
                error = msg.error()
                if error is None:
                    count += 1
                elif error.code() == error._PARTITION_EOF:
                    pending.discard((msg.topic() or "", msg.partition() or 0))
        return count
    finally:
        consumer.close()


def read_alerts(system: System) -> list[Alert]:
    """Every alert the system has published so far."""
    with system.client.reader(Topics.ALERTS, from_beginning=True) as reader:
        return [v for _, v in reader.drain({Topics.ALERTS: Alert}) if isinstance(v, Alert)]
