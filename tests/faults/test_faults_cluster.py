"""Broker faults on a three-broker KRaft cluster (slow: ``make chaos`` only): a private cluster of our own
(``tests.faults.cluster``), never the session's broker, with the system's topics created by the one
replication rule (3 replicas, ``min.insync.replicas=2``) and the producers' ``acks=all``.

* the leader of the busiest partitions is SIGKILLed mid-run: its partitions' leadership moves to a follower
  in sync, and every transactional stage must finish or abort its open transaction and go on;
* the transaction coordinator of the transactional stages is SIGKILLed mid-run: librdkafka may then
  report its producer fenced although no other producer has its id (a spurious fence), which the
  transaction engine answers with a new producer; the stages go on, none exits;
* a broker kept down while runs complete on the other two (2 of 3 replicas in sync is what min.insync asks);
* a rolling restart of every broker, under a stream of runs and under a continuous pipeline fed at a steady
  event rate (the topic readers' transactions and fences, the monitor's faust topics on the cluster).

Each ends with the exactly-once verdict of ``tests.faults.harness`` against the ledger of generated rows
(count, distinct ids, sums in PostgreSQL, exactly one result per run), and every batch transformed into
committed output exactly as often as it was extracted; the continuous pipeline's against the ledger of
generated events (``tests.faults.topic_readers``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aoetl.devstack.cluster import KafkaCluster
from shared.contracts import EventKind, Stage
from shared.kafka.topics import Topics
from shared.kafka.transaction import transactional_id
from tests.e2e.conftest import System
from tests.faults.cluster import (
    BROKERS,
    busiest_leader,
    cluster_topics,
    private_cluster,
    replicas_everywhere,
    replication_problems,
    transaction_coordinator,
)
from tests.faults.harness import (
    SHORT_KAFKA_CALLS,
    OrdersRun,
    RunWatcher,
    assert_exactly_once,
    orders_run,
    running_system,
)
from tests.faults.kafka_views import committed_keys
from tests.faults.topic_readers import continuous_run
from tests.helpers import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 2, "load": 2}


def sigkill_mid_run(
    postgres_dsn: str, tmp_path: Path, name: str, seed: int, victim_of: Callable[[KafkaCluster, System], int]
) -> None:
    """A run of 60 000 rows; once transform is at work, the broker ``victim_of`` names is SIGKILLed. The
    run lands exactly once, transform committed every extracted batch once, and no service died."""
    run = orders_run(tmp_path / "in", name, 60_000, seed=seed, batch_rows=1_000)
    with (
        private_cluster() as cluster,
        running_system(cluster.bootstrap, postgres_dsn, REPLICAS) as system,
        RunWatcher(system) as watcher,
    ):
        data_topics = [system.client.topic(t) for t in (Topics.DATA_EXTRACTED, Topics.DATA_TRANSFORMED)]
        replicas_everywhere(cluster.bootstrap, data_topics[0])
        watcher.submit(run)
        watcher.wait_stage(run.run_id, Stage.TRANSFORM, EventKind.BATCH_TRANSFORMED)
        victim = victim_of(cluster, system)
        cluster.kill_node(victim)
        result = watcher.await_result(run.run_id)
        assert_exactly_once(postgres_dsn, run, result)
        extracted = committed_keys(cluster.bootstrap, data_topics[0])
        transformed = committed_keys(cluster.bootstrap, data_topics[1])
        assert transformed == extracted
        assert all(p.is_alive() for p in system.supervisor.processes()), "a service died with the broker"
        cluster.restart_node(victim)  # the killed node rejoins the cluster from its data folder


def test_sigkill_of_the_busiest_leader_mid_run_loses_and_duplicates_nothing(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)

    def busiest(cluster: KafkaCluster, system: System) -> int:
        topics = [system.client.topic(t) for t in (Topics.DATA_EXTRACTED, Topics.DATA_TRANSFORMED)]
        return busiest_leader(cluster.bootstrap, topics)

    sigkill_mid_run(postgres_dsn, tmp_path, "cluster-kill", 61, busiest)


def test_sigkill_of_the_transaction_coordinator_mid_run_loses_and_duplicates_nothing(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: a commit failing as fenced when the coordinator died made the stage exit."""
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)

    def coordinator(cluster: KafkaCluster, system: System) -> int:
        ids = [
            transactional_id(service, f"{service}-{n}", suffix=system.suffix)
            for service in ("orchestrator", "extract", "transform")
            for n in range(REPLICAS[service])
        ]
        return transaction_coordinator(cluster.bootstrap, ids)

    sigkill_mid_run(postgres_dsn, tmp_path, "cluster-coordinator", 62, coordinator)


def test_runs_complete_on_two_brokers_while_the_third_stays_down(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)
    runs = [
        orders_run(tmp_path / f"in-{n}", f"cluster-down-{n}", 20_000, seed=70 + n, batch_rows=1_000)
        for n in range(2)
    ]
    with (
        private_cluster() as cluster,
        running_system(cluster.bootstrap, postgres_dsn, REPLICAS) as system,
        RunWatcher(system) as watcher,
    ):
        replicas_everywhere(cluster.bootstrap, system.client.topic(Topics.DATA_EXTRACTED))
        down = busiest_leader(cluster.bootstrap, [system.client.topic(Topics.REQUESTS)])
        cluster.kill_node(down)
        for run in runs:
            watcher.submit(run)
        for run in runs:
            assert_exactly_once(postgres_dsn, run, watcher.await_result(run.run_id))
        assert cluster.live_brokers() == BROKERS - 1, "the stopped broker came back on its own"
        assert all(p.is_alive() for p in system.supervisor.processes()), "a service died with the broker"


def test_rolling_restart_of_every_broker_under_a_stream_of_runs(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each broker in turn stopped (SIGTERM: a controlled shutdown hands its leaderships over) and started
    again once the other two serve, while runs keep being submitted at a steady pace, one per broker
    restart and one before: every run lands exactly once."""
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)
    runs = [
        orders_run(tmp_path / f"in-{n}", f"cluster-roll-{n}", 15_000, seed=80 + n, batch_rows=1_000)
        for n in range(BROKERS + 1)
    ]
    with (
        private_cluster() as cluster,
        running_system(cluster.bootstrap, postgres_dsn, REPLICAS) as system,
        RunWatcher(system) as watcher,
    ):
        replicas_everywhere(cluster.bootstrap, system.client.topic(Topics.DATA_EXTRACTED))
        watcher.submit(runs[0])
        for node, run in zip(cluster.nodes, runs[1:], strict=True):
            watcher.wait_stage(watcher_last(runs, run), Stage.EXTRACT)
            node.stop()
            watcher.submit(run)  # submitted while the broker is down
            cluster.restart_node(node.node_id)
        for run in runs:
            assert_exactly_once(postgres_dsn, run, watcher.await_result(run.run_id))
        assert cluster.live_brokers() == BROKERS
        assert all(p.is_alive() for p in system.supervisor.processes()), "a service died with a broker"


def watcher_last(runs: list[OrdersRun], run: OrdersRun) -> str:
    """The run submitted just before ``run`` (the next restart waits until it is being extracted)."""
    return runs[runs.index(run) - 1].run_id


def test_rolling_restart_of_every_broker_under_a_continuous_pipeline(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each broker in turn stopped (SIGTERM) and started again once the other two serve, while a continuous
    pipeline (two extract replicas sharing its source group) is fed 200 events/s: rows keep landing while
    each broker is down, every event lands exactly once (count, distinct ids, sums against the ledger of
    generated events), the run's one result is CANCELLED when it is stopped, and no service died. The
    monitor runs too: its faust topics follow the cluster's rule (3 replicas, 2 in sync)."""
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)
    replicas = {"orchestrator": 1, "extract": 2, "transform": 1, "load": 1, "monitor": 1}
    with (
        private_cluster() as cluster,
        running_system(cluster.bootstrap, postgres_dsn, replicas) as system,
        continuous_run(
            system, cluster.bootstrap, postgres_dsn, "cluster-stream-roll", total=30_000, partitions=4
        ) as run,
    ):
        run.stream.per_tick = 20  # 200 events/s: ~150 s of stream, longer than the three restarts
        run.wait_loading(timeout=120)
        for node in cluster.nodes:
            assert run.stream.produced < run.total, "each restart must land while events still arrive"
            before, _ = run.loaded()
            node.stop()

            def landing(before: int = before) -> bool:
                return run.loaded()[0] > before

            wait_until(
                landing, timeout=120, interval=0.5, message=f"rows loaded while broker {node.node_id} is down"
            )
            cluster.restart_node(node.node_id)
        run.wait_delivered(timeout=300)
        run.assert_exactly_once()
        assert cluster.live_brokers() == BROKERS
        assert all(p.is_alive() for p in system.supervisor.processes()), "a service died with a broker"
        faust_topics_follow_the_rule(cluster.bootstrap, system.suffix)


def faust_topics_follow_the_rule(bootstrap: str, suffix: str) -> None:
    """The monitor's changelogs and internal topics (named after its app id, which holds the suffix)."""
    faust = [
        name
        for name in cluster_topics(bootstrap)
        if suffix in name and ("changelog" in name or "-__assignor" in name)
    ]
    assert faust, "the monitor declared no topics"
    assert replication_problems(bootstrap, faust) == []
