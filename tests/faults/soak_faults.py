"""The soak's fault matrix (``tests.faults.soak``): what each fault does to the running system, dealt from a
seeded deck so each is met once per pass, and the repair after each round (the broker kept down started
again, every service back to its replica count), with a count of what had to be repaired without a fault
asking for it (a replica or a broker that exited on its own). A fault that cannot be applied as planned is
counted and reported, never fatal: the soak's verdict is about the data, not about the fault's aim.

Faults on services: SIGKILL of a replica of each stage, a rebalance (replicas added, old ones SIGTERMed), a
transform replica frozen past its session timeout (a zombie), the monitor killed, the load group rewound
(a duplicate delivery of everything it consumed). On the servers: PostgreSQL restarted, the load's backends
terminated mid-transaction, the broker restarted. On a three-broker cluster only (``BROKER_FAULTS``): the
leader of the busiest data partitions SIGKILLed and started again, a broker SIGKILLed and kept down until
the round's runs have completed on the other two; ``broker-restart`` there is one broker's controlled
restart. Broker faults lead each pass on a cluster, so a short soak meets them too.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from aoetl.devstack.cluster import KafkaCluster
from aoetl.devstack.kafka import KafkaNode
from aoetl.devstack.postgres import PostgresNode
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.faults.cluster import busiest_leader
from tests.faults.harness import group_id, signal_replica, start_replicas
from tests.faults.kafka_views import rewind_group, uncommitted_records, wait_group
from tests.faults.servers import restart_kafka, restart_postgres, terminate_backends
from tests.helpers import wait_until

REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 2, "load": 2, "monitor": 1}
FAULTS = (
    "kill-extract",
    "kill-transform",
    "kill-load",
    "kill-orchestrator",
    "broker-restart",
    "postgres-restart",
    "pg-terminate",
    "rebalance",
    "zombie-transform",
    "monitor-kill",
    "duplicate-delivery",
)
# on a cluster only: one broker of three may go, the rule keeps 2 of 3 replicas in sync
BROKER_FAULTS = ("kill-busiest-leader", "broker-down")
# a fault injected once a round's results are in (the others strike mid-run)
AFTER_RESULTS = "duplicate-delivery"
REPLAY_TIMEOUT = 300.0

console = Console()


@dataclass
class FaultMatrix:
    system: System
    kafka: KafkaNode | KafkaCluster
    postgres: PostgresNode
    load_app: str
    rng: random.Random
    faults_dealt: Sequence[str] = FAULTS
    injected: Counter[str] = field(default_factory=Counter)
    not_as_planned: Counter[str] = field(default_factory=Counter)
    unexpected_exits: Counter[str] = field(default_factory=Counter)
    unexpected_broker_exits: int = 0
    deck: list[str] = field(default_factory=list)
    down: int | None = None  # the broker kept down for the round

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def brokers(self) -> int:
        return self.kafka.size if isinstance(self.kafka, KafkaCluster) else 1

    def deal(self) -> str:
        """The next fault: each once per pass through the matrix, in a seeded order, broker faults first
        on a cluster."""
        if not self.deck:
            broker = [f for f in self.faults_dealt if f in BROKER_FAULTS or f == "broker-restart"]
            others = [f for f in self.faults_dealt if f not in broker]
            self.rng.shuffle(broker)
            self.rng.shuffle(others)
            self.deck = broker + others if self.brokers > 1 else others + broker
        return self.deck.pop(0)

    def restore(self) -> None:
        """After a round: the brokers, then the services, back to what the soak runs."""
        self._restore_brokers()
        self._restore_replicas()

    def inject(self, fault: str) -> None:
        self.injected[fault] += 1
        action: dict[str, Callable[[], None]] = {
            "kill-extract": lambda: self._kill("extract"),
            "kill-transform": lambda: self._kill("transform"),
            "kill-load": lambda: self._kill("load"),
            "kill-orchestrator": lambda: self._kill("orchestrator"),
            "broker-restart": self._restart_broker,
            "kill-busiest-leader": self._kill_busiest_leader,
            "broker-down": self._broker_down,
            "postgres-restart": lambda: restart_postgres(self.postgres),
            "pg-terminate": self._terminate_backends,
            "rebalance": self._rebalance,
            "zombie-transform": self._zombie,
            "monitor-kill": lambda: self._kill("monitor", wait=False),
            "duplicate-delivery": self._replay_load_input,
        }
        try:
            action[fault]()
        except Exception as exc:  # a fault that could not be applied as planned is reported, not fatal
            self.not_as_planned[fault] += 1
            console.print(f"[yellow]fault {fault} not applied as planned: {exc!r}[/]")

    def _cluster(self) -> KafkaCluster:
        assert isinstance(self.kafka, KafkaCluster), "a broker fault of the cluster on a single broker"
        return self.kafka

    def _restart_broker(self) -> None:
        """A controlled restart (SIGTERM: leaderships handed over) of one broker, or of the only one."""
        if not isinstance(self.kafka, KafkaCluster):
            restart_kafka(self.kafka)
            return
        node = self.rng.choice(self.kafka.nodes)
        node.stop()
        self.kafka.restart_node(node.node_id)

    def _kill_busiest_leader(self) -> None:
        """SIGKILL the leader of the busiest data partitions (no hand-over), then start it again."""
        cluster = self._cluster()
        topics = [self.system.client.topic(t) for t in (Topics.DATA_EXTRACTED, Topics.DATA_TRANSFORMED)]
        victim = busiest_leader(self.bootstrap, topics)
        cluster.kill_node(victim)
        cluster.restart_node(victim)

    def _broker_down(self) -> None:
        """SIGKILL a broker and leave it down: the round's runs complete on the other two."""
        cluster = self._cluster()
        self.down = self.rng.choice(cluster.nodes).node_id
        cluster.kill_node(self.down)

    def _restore_brokers(self) -> None:
        """Start the broker kept down, and any other that exited on its own (counted: none should)."""
        if not isinstance(self.kafka, KafkaCluster):
            return
        stopped = [node.node_id for node in self.kafka.nodes if not node.is_running()]
        self.unexpected_broker_exits += len([n for n in stopped if n != self.down])
        self.down = None
        for node_id in stopped:
            self.kafka.restart_node(node_id)

    def _alive(self, service: str) -> list[Any]:
        return self.system.supervisor.alive(service)

    def _kill(self, service: str, *, wait: bool = True) -> None:
        victim = self.rng.choice(self._alive(service))
        signal_replica(victim, signal.SIGKILL, wait_exit=10)
        start_replicas(self.system, service, wait=wait)

    def _terminate_backends(self) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            terminate_backends(self.postgres.dsn, self.load_app)
            time.sleep(0.05)  # a fault's own pacing, not a test waiting for a condition

    def _rebalance(self) -> None:
        for service in ("transform", "load"):
            old = self._alive(service)
            start_replicas(self.system, service)
            signal_replica(self.rng.choice(old), signal.SIGTERM)

    def _zombie(self) -> None:
        members = len(self._alive("transform"))
        zombie = self.rng.choice(self._alive("transform"))
        signal_replica(zombie, signal.SIGSTOP, wait_exit=None)
        try:
            wait_group(self.bootstrap, group_id(self.system, "transform"), members - 1, timeout=60)
        finally:
            signal_replica(zombie, signal.SIGCONT, wait_exit=None)

    def _replay_load_input(self) -> None:
        group = group_id(self.system, "load")
        inputs = [self.system.client.topic(Topics.DATA_TRANSFORMED), self.system.client.topic(Topics.CONTROL)]
        count = len(self._alive("load"))
        self.system.supervisor.stop("load")
        wait_group(self.bootstrap, group, 0)
        rewind_group(self.bootstrap, group, inputs)
        start_replicas(self.system, "load", count)
        wait_until(
            lambda: uncommitted_records(self.bootstrap, group, inputs) == 0,
            timeout=REPLAY_TIMEOUT,
            interval=1,
            message="the load group to consume its input again",
        )

    def _restore_replicas(self) -> None:
        """Bring every service back to its replica count (a fenced zombie may exit, by design)."""
        for service, want in REPLICAS.items():
            missing = want - len(self._alive(service))
            if missing > 0:
                self.unexpected_exits[service] += missing
                start_replicas(self.system, service, missing, wait=service != "monitor")
