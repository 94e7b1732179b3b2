"""The three-broker KRaft cluster of the broker faults (``tests.faults.test_faults_cluster`` and the soak's
``--brokers 3``): a private cluster of our own (``aoetl.devstack.cluster``, the machinery of
``aoetl dev up --brokers 3``), never the session's broker, and what a fault on it needs to know: which
broker leads the busiest partitions (its death moves the most traffic at once), which one coordinates the
stages' transactions, and whether the topics really follow the replication rule (3 replicas,
``min.insync.replicas=2``), without which a broker fault proves nothing about durability.
"""

from __future__ import annotations

import contextlib
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from aoetl.devstack.cluster import KafkaCluster
from shared.kafka.replication import MIN_INSYNC_CONFIG, Replication
from tests.faults.harness import keep_logs
from tests.helpers import make_state_dir

BROKERS = 3


@contextlib.contextmanager
def private_cluster(size: int = BROKERS) -> Iterator[KafkaCluster]:
    """``size`` brokers of our own, for the faults that kill them; stopped and deleted afterwards (a failed
    test keeps each node's logs with ``AOETL_FAULTS_KEEP_LOGS``)."""
    state = make_state_dir("aoetl-faults-cluster-")
    cluster = KafkaCluster(state / "kafka-cluster", size)
    try:
        cluster.start(timeout=240)
        yield cluster
    except BaseException:
        for node in cluster.nodes:
            keep_logs(node.home, f"kafka-{node.node_id}")
        raise
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


def busiest_leader(bootstrap: str, topics: list[str]) -> int:
    """The broker leading the partitions that hold the most records of ``topics`` (their end offsets
    summed per leader): the one whose death moves the most traffic at once."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    load: Counter[int] = Counter()

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-cluster-offsets"})
    try:
        for topic in topics:
            for number, partition in metadata.topics[topic].partitions.items():
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)
                load[partition.leader] += high + 1  # +1: an empty partition still counts for its leader
    finally:
        consumer.close()
    leader, _ = load.most_common(1)[0]
    return leader


def java_hash(text: str) -> int:
    """Java's ``String.hashCode`` (of text in the Basic Multilingual Plane), as a signed 32-bit int."""
    h = 0
    for char in text:
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def transaction_coordinator(bootstrap: str, transactional_ids: list[str]) -> int:
    """The broker coordinating the most of ``transactional_ids``: the leader of the ``__transaction_state``
    partition each id belongs to (the broker's rule: ``abs(id.hashCode()) % partitions``)."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    state = topics["__transaction_state"]
    count = len(state.partitions)
    coordinators = Counter(
        state.partitions[(0 if h == -(1 << 31) else abs(h)) % count].leader
        for h in map(java_hash, transactional_ids)
    )
    coordinator, _ = coordinators.most_common(1)[0]
    return coordinator


def replicas_everywhere(bootstrap: str, topic: str) -> None:
    """The system's topics really are replicated as the rule says (else the faults prove nothing)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    assert {len(p.replicas) for p in metadata.topics[topic].partitions.values()} == {BROKERS}


def replication_problems(bootstrap: str, topics: Iterable[str], brokers: int = BROKERS) -> list[str]:
    """What of ``topics`` breaks the rule of a ``brokers``-broker cluster (``Replication.for_brokers``): a
    partition with another number of replicas, or a topic whose ``min.insync.replicas`` (its own or the
    broker default it falls back on, as the broker reports it) is another. Empty when all follow it."""
    rule = Replication.for_brokers(brokers)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10).topics
    names = sorted(topics)
    problems = [f"{name}: not in the cluster's metadata" for name in names if name not in metadata]
    present = [name for name in names if name in metadata]
    for name in present:
        counts = sorted({len(p.replicas) for p in metadata[name].partitions.values()})
        if counts != [rule.factor]:
            problems.append(f"{name}: {counts} replicas, not {rule.factor}")
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in present]
    if resources:
        for resource, future in admin.describe_configs(resources).items():
            value = future.result(timeout=30)[MIN_INSYNC_CONFIG].value
            if value != str(rule.min_insync):
                problems.append(f"{resource.name}: {MIN_INSYNC_CONFIG}={value}, not {rule.min_insync}")
    return problems


def cluster_topics(bootstrap: str) -> list[str]:
    """Every topic of the cluster, the broker's internal ones (group offsets, transaction state) too."""
    return list(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)
