"""A multi-broker KRaft cluster of the dev stack (``aoetl dev up --brokers 3``), from the same Apache jars as
the single node (``aoetl.devstack.kafka``).

Layout: every node is a combined broker+controller (``process.roles=broker,controller``) and the quorum is
static (``controller.quorum.voters`` names all of them), so three JVMs form a 3-voter quorum that survives
one node's loss. Combined rather than dedicated controllers because the stack runs on a developer's machine
(and in CI on two cores): three dedicated controllers would double the JVMs for no fault the tests can
show, since a combined node's death is the harder case anyway (a broker and a voter lost at once). Each node
has its own ports, data folder and log under ``<home>/node-<id>``, and all are formatted with one cluster id.

Readiness is the cluster's: every node alive and the metadata listing all of them, because a node alone
cannot serve anything until the quorum has elected a leader, and topics created before every broker has
registered could not get their replicas. The secured mode (TLS, SCRAM, ACLs) is single-node only for now:
``DevStack`` refuses the combination before anything starts.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from aoetl.devstack.errors import StackStartupError
from aoetl.devstack.kafka import KafkaNode, new_cluster_id, private_broker_settings
from aoetl.devstack.osproc import port_accepts, tail, wait_for
from shared.kafka.clients import KafkaClients
from shared.settings import KafkaSettings

# Three JVMs share the machine with PostgreSQL and the services: a small heap each (the single node's 512m
# times three would crowd out everything else on a 2-core, few-GiB box). AOETL_KAFKA_HEAP overrides it.
CLUSTER_HEAP: Final = "384m"


class KafkaCluster:
    """``size`` combined broker+controller nodes under ``home`` (``node-1`` ... ``node-<size>``)."""

    def __init__(self, home: Path, size: int, state: dict[str, Any] | None = None) -> None:
        if size < 2:
            raise ValueError(f"a cluster has at least two nodes, not {size} (one is KafkaNode)")
        state = state or {}
        self.home = home
        self.cluster_id: str = state.get("cluster_id") or new_cluster_id()
        recorded = list(state.get("nodes") or [])
        heap = os.environ.get("AOETL_KAFKA_HEAP") or CLUSTER_HEAP
        self.nodes: list[KafkaNode] = []
        for node_id in range(1, size + 1):
            node = KafkaNode.from_state(home / f"node-{node_id}", _at(recorded, node_id - 1))
            node.node_id, node.cluster_size, node.cluster_id, node.heap = node_id, size, self.cluster_id, heap
            self.nodes.append(node)

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def bootstrap(self) -> str:
        """Every node, so a client finds the cluster while any one of them is up."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def admin_settings(self) -> KafkaSettings:
        return private_broker_settings(self.bootstrap)

    @property
    def secure(self) -> bool:
        return False

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def is_running(self) -> bool:
        return any(node.is_running() for node in self.nodes)

    def is_ready(self, timeout: float = 3.0) -> bool:
        return all(node.is_running() and port_accepts(node.port) for node in self.nodes) and (
            self.live_brokers(timeout) == self.size
        )

    def live_brokers(self, timeout: float = 3.0) -> int:
        return len(self.listed_brokers(timeout))

    def listed_brokers(self, timeout: float = 3.0) -> set[int]:
        """The node ids the cluster's metadata lists as brokers (none when no node answers)."""
        admin = KafkaClients(self.admin_settings).admin(
            **{"socket.timeout.ms": int(timeout * 1000), "error_cb": _quiet}
        )
        try:
            return set(admin.list_topics(timeout=timeout).brokers)
        except Exception:  # any failure to answer means: no broker to be counted
            return set()

    def start(self, timeout: float = 180.0) -> None:
        """Start every node not running (adopting the running ones) and return once all are brokers of the
        cluster. Ports are chosen for all nodes first: each node's config names every voter."""
        stopped = [node for node in self.nodes if not node.is_running()]
        taken = {
            port for node in self.nodes if node not in stopped for port in (node.port, node.controller_port)
        }
        for node in stopped:
            node.pick_ports(taken)
        voters = ",".join(f"{node.node_id}@127.0.0.1:{node.controller_port}" for node in self.nodes)
        for node in self.nodes:
            node.voters = voters
        for node in stopped:
            node.launch()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            for node in self.nodes:
                if not node.is_running():
                    raise StackStartupError(
                        f"Kafka node {node.node_id} exited during startup; see {node.log_path}:\n"
                        f"{tail(node.home / 'stdout.log')}\n{tail(node.log_path)}"
                    )
            return self.is_ready(2.0)

        wait_for(ready, timeout=timeout, interval=0.5, what=f"a {self.size}-broker Kafka cluster")

    def restart_node(self, node_id: int, timeout: float = 180.0) -> None:
        """Start a stopped (or killed) node again, same ports and data folder; back once it has rejoined."""
        node = self.node(node_id)
        if not node.is_running():
            node.launch()
        self.wait_ready(timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL: the node gets no chance to hand its leaderships over (what a crash looks like)."""
        node = self.node(node_id)
        if node.is_running() and node.pid is not None:
            os.kill(node.pid, signal.SIGKILL)
            wait_for(lambda: not node.is_running(), timeout=30, what=f"Kafka node {node_id} to die")
        node.stop()  # reaps it

    def stop(self, timeout: float = 30.0) -> None:
        # All at once: stopped one by one, the last nodes would spend their shutdown waiting for a quorum
        # that is already gone.
        with ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="kafka-stop") as pool:
            for future in [pool.submit(node.stop, timeout) for node in self.nodes]:
                future.result()

    def to_state(self) -> dict[str, Any]:
        return {
            "brokers": self.size,
            "cluster_id": self.cluster_id,
            "bootstrap": self.bootstrap,
            "nodes": [node.to_state() for node in self.nodes],
        }


def _quiet(_error: object) -> None:
    """Connection-refused noise while a node is down is expected; the metadata answer is what counts."""


def _at(items: list[Any], index: int) -> Any:
    return items[index] if index < len(items) else None
