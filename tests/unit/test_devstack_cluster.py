"""The dev stack's multi-broker layout (``aoetl.devstack.cluster``), checked on the files it writes: no JVM
starts here (``tests/faults/test_faults_cluster.py`` runs the cluster for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoetl.devstack.cluster import KafkaCluster
from aoetl.devstack.kafka import KafkaNode
from aoetl.devstack.stack import DevStack
from shared.errors import ConfigurationError

pytestmark = pytest.mark.unit


def _config(node: KafkaNode) -> dict[str, str]:
    return dict(line.split("=", 1) for line in node.config_path.read_text().splitlines())


def _laid_out(tmp_path: Path) -> KafkaCluster:
    cluster = KafkaCluster(tmp_path / "kafka-cluster", 3)
    taken: set[int] = set()
    for node in cluster.nodes:
        node.pick_ports(taken)
    voters = ",".join(f"{node.node_id}@127.0.0.1:{node.controller_port}" for node in cluster.nodes)
    for node in cluster.nodes:
        node.voters = voters
        node.home.mkdir(parents=True)
        node._write_config()
    return cluster


def test_three_voters_each_with_its_own_ports_and_data(tmp_path: Path) -> None:
    cluster = _laid_out(tmp_path)
    configs = [_config(node) for node in cluster.nodes]
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    assert {c["process.roles"] for c in configs} == {"broker,controller"}
    assert len({c["controller.quorum.voters"] for c in configs}) == 1  # one quorum, named alike everywhere
    assert configs[0]["controller.quorum.voters"].count("@") == 3
    assert len({c["log.dirs"] for c in configs}) == 3
    ports = [p for node in cluster.nodes for p in (node.port, node.controller_port)]
    assert len(set(ports)) == 6
    assert cluster.bootstrap.count(",") == 2


def test_internal_and_auto_created_topics_follow_the_replication_rule(tmp_path: Path) -> None:
    config = _config(_laid_out(tmp_path).nodes[0])
    assert config["offsets.topic.replication.factor"] == "3"
    assert config["transaction.state.log.replication.factor"] == "3"
    assert config["transaction.state.log.min.isr"] == "2"
    assert (config["default.replication.factor"], config["min.insync.replicas"]) == ("3", "2")


def test_the_single_node_keeps_its_one_replica_layout(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path / "kafka", port=19093, controller_port=19094)
    node.home.mkdir(parents=True)
    node._write_config()
    config = _config(node)
    assert (config["node.id"], config["controller.quorum.voters"]) == ("1", "1@127.0.0.1:19094")
    assert config["offsets.topic.replication.factor"] == config["transaction.state.log.min.isr"] == "1"
    assert "default.replication.factor" not in config and "min.insync.replicas" not in config


def test_the_cluster_is_remembered_with_its_id_and_ports(tmp_path: Path) -> None:
    cluster = _laid_out(tmp_path)
    again = KafkaCluster(cluster.home, 3, cluster.to_state())
    assert again.cluster_id == cluster.cluster_id
    assert [n.port for n in again.nodes] == [n.port for n in cluster.nodes]
    assert {n.cluster_id for n in again.nodes} == {cluster.cluster_id}


def test_secure_and_several_brokers_are_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="plaintext only"):
        DevStack(tmp_path, secure=True, brokers=3)
    with pytest.raises(ConfigurationError, match="at least one broker"):
        DevStack(tmp_path, brokers=0)
    assert DevStack(tmp_path).brokers == 1 and DevStack(tmp_path).cluster is None
