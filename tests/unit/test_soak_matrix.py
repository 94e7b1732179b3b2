"""The soak's fault matrix and replication check (``tests.faults.soak_faults``, ``tests.faults.cluster``),
without servers: on a cluster the broker faults lead every pass through the matrix and each fault is dealt
once per pass, in the seed's order; on one broker the cluster's faults are never dealt; a topic off the
replication rule (replicas or ``min.insync.replicas``) is named, one that follows it is not."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import pytest

from aoetl.devstack.cluster import KafkaCluster
from aoetl.devstack.kafka import KafkaNode
from tests.faults import cluster
from tests.faults.soak_faults import BROKER_FAULTS, FAULTS, FaultMatrix

pytestmark = pytest.mark.unit


def _matrix(kafka: Any, faults: tuple[str, ...], seed: int = 7) -> FaultMatrix:
    # dealing needs neither the system nor PostgreSQL
    return FaultMatrix(cast(Any, None), kafka, cast(Any, None), "app", random.Random(seed), faults)


def test_on_a_cluster_the_broker_faults_lead_every_pass(tmp_path: Path) -> None:
    faults = FAULTS + BROKER_FAULTS
    matrix = _matrix(KafkaCluster(tmp_path / "kafka-cluster", 3), faults)
    assert matrix.brokers == 3
    for _ in range(2):
        dealt = [matrix.deal() for _ in faults]
        assert sorted(dealt) == sorted(faults), "each fault once per pass"
        assert set(dealt[:3]) == {*BROKER_FAULTS, "broker-restart"}


def test_the_order_is_the_seeds(tmp_path: Path) -> None:
    faults = FAULTS + BROKER_FAULTS
    matrices = [_matrix(KafkaCluster(tmp_path / f"k{n}", 3), faults, seed=s) for n, s in enumerate((1, 1, 2))]
    deals = [[m.deal() for _ in faults] for m in matrices]
    assert deals[0] == deals[1] != deals[2]


def test_on_one_broker_only_its_faults_are_dealt(tmp_path: Path) -> None:
    matrix = _matrix(KafkaNode(tmp_path / "kafka"), FAULTS)
    assert matrix.brokers == 1
    assert sorted(matrix.deal() for _ in FAULTS) == sorted(FAULTS)


class _Partition:
    def __init__(self, replicas: int) -> None:
        self.replicas = list(range(replicas))


class _Topic:
    def __init__(self, *replicas: int) -> None:
        self.partitions = {n: _Partition(r) for n, r in enumerate(replicas)}


class _Entry:
    def __init__(self, value: str) -> None:
        self.value = value


class _Future:
    def __init__(self, value: str) -> None:
        self.value = value

    def result(self, timeout: float) -> dict[str, _Entry]:
        return {"min.insync.replicas": _Entry(self.value)}


class _Admin:
    TOPICS = {"good": _Topic(3, 3), "thin": _Topic(3, 1), "loose": _Topic(3), "__consumer_offsets": _Topic(3)}
    MIN_INSYNC = {"good": "2", "thin": "2", "loose": "1", "__consumer_offsets": "2"}

    def __init__(self, config: dict[str, str]) -> None:
        pass

    def list_topics(self, timeout: float) -> Any:
        return type("Metadata", (), {"topics": self.TOPICS})()

    def describe_configs(self, resources: list[Any]) -> dict[Any, _Future]:
        return {r: _Future(self.MIN_INSYNC[r.name]) for r in resources}


def test_a_topic_off_the_rule_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "AdminClient", _Admin)
    assert cluster.cluster_topics("x:1") == list(_Admin.TOPICS)
    problems = cluster.replication_problems("x:1", [*_Admin.TOPICS, "gone"])
    assert problems == [
        "gone: not in the cluster's metadata",
        "thin: [1, 3] replicas, not 3",
        "loose: min.insync.replicas=1, not 2",
    ]
    assert cluster.replication_problems("x:1", ["good", "__consumer_offsets"]) == []
