"""Fault injection on the consumer groups (fast, part of ``make test``): replicas joining and leaving
mid-run, a zombie transform replica that wakes up after its partitions moved, and a load group rewound
to the start of its input after the run finished.

Each test checks the PostgreSQL destination against the ledger of the rows it generated (count, per
column sums, distinct ids) and the run's result.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.contracts import BatchLoaded, EventKind, PipelineResult, RunEvent, RunStatus, Stage
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.faults.harness import (
    RunWatcher,
    assert_exactly_once,
    group_id,
    orders_run,
    pg_figures,
    running_system,
    signal_replica,
    start_replicas,
)
from tests.faults.kafka_views import committed_keys, rewind_group, uncommitted_records, wait_group
from tests.helpers import wait_until

pytestmark = pytest.mark.faults


def applied(event: RunEvent) -> bool:
    loaded = event.payload_as(BatchLoaded)
    return loaded is None or loaded.applied


@pytest.fixture
def system(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[System]:
    replicas = {"orchestrator": 1, "extract": 1, "transform": 2, "load": 2}
    with running_system(kafka_bootstrap, postgres_dsn, replicas) as sys_:
        yield sys_


def test_replicas_added_and_removed_mid_run_lose_and_duplicate_nothing(
    system: System, tmp_path: Path, postgres_dsn: str
) -> None:
    run = orders_run(tmp_path / "in", "rebalance", 60_000, seed=31, batch_rows=1_000, parallelism=6)
    with RunWatcher(system) as watcher:
        watcher.submit(run)
        watcher.wait_stage(run.run_id, Stage.TRANSFORM)
        originals = {name: system.supervisor.alive(name)[0] for name in ("transform", "load")}
        # Scale out first, then retire an original replica gracefully: two rebalances per group.
        start_replicas(system, "transform")
        start_replicas(system, "load")
        assert not watcher.result(run.run_id), "the run ended before the rebalance; give it more rows"
        for process in originals.values():
            signal_replica(process, signal.SIGTERM)
        result = watcher.await_result(run.run_id)
    assert_exactly_once(postgres_dsn, run, result)
    for name in ("transform", "load"):
        assert len(system.supervisor.alive(name)) == 2


def test_zombie_transform_replica_is_fenced_after_its_partitions_moved(
    system: System, tmp_path: Path, postgres_dsn: str, kafka_bootstrap: str
) -> None:
    run = orders_run(tmp_path / "in", "zombie", 60_000, seed=32, batch_rows=1_000, parallelism=6)
    transform_group = group_id(system, "transform")
    with RunWatcher(system) as watcher:
        watcher.submit(run)
        watcher.wait_stage(run.run_id, Stage.TRANSFORM, EventKind.BATCH_TRANSFORMED)
        zombie = system.supervisor.alive("transform")[0]
        signal_replica(zombie, signal.SIGSTOP, wait_exit=None)
        try:
            # Past the session timeout the group drops the frozen member and its partitions move.
            wait_group(kafka_bootstrap, transform_group, members=1, timeout=60)
        finally:
            signal_replica(zombie, signal.SIGCONT, wait_exit=None)
        result = watcher.await_result(run.run_id)
    assert_exactly_once(postgres_dsn, run, result)
    # The sink's ledger would hide a duplicated batch, so look at the transform's committed output itself:
    # every extracted batch was transformed into exactly as many committed records as were extracted.
    extracted = committed_keys(kafka_bootstrap, system.client.topic(Topics.DATA_EXTRACTED))
    transformed = committed_keys(kafka_bootstrap, system.client.topic(Topics.DATA_TRANSFORMED))
    assert transformed == extracted, "a transformed batch was committed twice (the zombie was not fenced)"
    assert sum(extracted.values()) >= 60


def test_load_group_rewound_to_the_start_after_a_run_changes_nothing(
    system: System, tmp_path: Path, postgres_dsn: str, kafka_bootstrap: str
) -> None:
    run = orders_run(tmp_path / "in", "redelivery", 20_000, seed=33, batch_rows=1_000)
    with RunWatcher(system) as watcher:
        watcher.submit(run)
        first = watcher.await_result(run.run_id)
        assert_exactly_once(postgres_dsn, run, first)
        before = pg_figures(postgres_dsn, run.table)
        batches = sum(1 for e in watcher.events[run.run_id] if e.kind is EventKind.BATCH_LOADED)

        load_group = group_id(system, "load")
        inputs = [system.client.topic(Topics.DATA_TRANSFORMED), system.client.topic(Topics.CONTROL)]
        system.supervisor.stop("load")
        wait_group(kafka_bootstrap, load_group, members=0)
        assert uncommitted_records(kafka_bootstrap, load_group, inputs) == 0
        rewind_group(kafka_bootstrap, load_group, inputs)
        assert uncommitted_records(kafka_bootstrap, load_group, inputs) >= batches + 1
        start_replicas(system, "load", 2)

        def events_of(kind: EventKind) -> list[RunEvent]:
            watcher.poll()
            return [e for e in watcher.events[run.run_id] if e.kind is kind]

        # Every batch delivered again is answered "already applied", and the finalize is applied again.
        wait_until(
            lambda: (
                len([e for e in events_of(EventKind.BATCH_LOADED) if not applied(e)]) >= batches
                and len(events_of(EventKind.RUN_FINALIZED)) >= 2
            ),
            timeout=90,
            message="the load group to consume its whole input again",
        )
        # The orchestrator has seen the replayed events once its group is caught up; a second result
        # would be committed with those offsets, so it would be visible now.
        orchestrator = group_id(system, "orchestrator")
        events_topic = [system.client.topic(Topics.EVENTS)]
        wait_until(
            lambda: uncommitted_records(kafka_bootstrap, orchestrator, events_topic) == 0,
            timeout=60,
            message="the orchestrator to process the replayed events",
        )
    assert pg_figures(postgres_dsn, run.table) == before
    assert_exactly_once(postgres_dsn, run, first)
    with system.client.reader(Topics.RESULTS, from_beginning=True) as reader:
        results = [
            v
            for _, v in reader.drain({Topics.RESULTS: PipelineResult})
            if isinstance(v, PipelineResult) and v.run_id == run.run_id
        ]
    assert [r.status for r in results] == [RunStatus.COMPLETED], "redelivery made a second result"
