"""Fault injection on the broker (slow: ``make chaos`` only): the one Kafka broker stopped mid-run and
started again on the same port and data folder. A private broker, never the session's or the shared one.

Every transactional stage must abort or finish its open transaction, reconnect and go on; the load stage's
ledger absorbs the batches it applied but could not acknowledge. The destination must match the ledger of
generated rows, and every batch must have been transformed into committed output exactly as often as it
was extracted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.contracts import EventKind, Stage
from shared.kafka.topics import Topics
from tests.faults.harness import RunWatcher, assert_exactly_once, orders_run, running_system
from tests.faults.kafka_views import committed_keys
from tests.faults.servers import private_kafka, restart_kafka

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 2, "load": 2}


@pytest.mark.parametrize("when", [Stage.TRANSFORM, Stage.LOAD])
def test_broker_restart_mid_run_loses_and_duplicates_nothing(
    postgres_dsn: str, tmp_path: Path, when: Stage
) -> None:
    run = orders_run(tmp_path / "in", f"broker-{when.value}", 60_000, seed=51, batch_rows=1_000)
    kind = EventKind.BATCH_TRANSFORMED if when is Stage.TRANSFORM else EventKind.BATCH_LOADED
    with (
        private_kafka() as kafka,
        running_system(kafka.bootstrap, postgres_dsn, REPLICAS) as system,
        RunWatcher(system) as watcher,
    ):
        watcher.submit(run)
        watcher.wait_stage(run.run_id, when, kind)
        restart_kafka(kafka)
        result = watcher.await_result(run.run_id)
        assert_exactly_once(postgres_dsn, run, result)
        extracted = committed_keys(kafka.bootstrap, system.client.topic(Topics.DATA_EXTRACTED))
        transformed = committed_keys(kafka.bootstrap, system.client.topic(Topics.DATA_TRANSFORMED))
        assert transformed == extracted
        assert all(p.is_alive() for p in system.supervisor.processes()), "a service died with the broker"
