"""Fault injection on the PostgreSQL destination: the load service's backends terminated in the middle of
their transactions, and the server restarted mid-run (a private cluster, so nothing else is hit).

Slow (``make chaos`` only, like the soak's ``pg-terminate`` and ``postgres-restart`` faults): together they
take about a minute of ``make test``, and each link of what they prove is checked there on its own, faster
and more precisely: a backend terminated inside a batch's transaction leaves nothing, is a transient error
and the retry applies the batch once after reconnecting, and an unreachable server is transient
(``tests/integration/test_sinks_postgres.py``); a transient error is retried without duplicates
(``tests/integration/test_runtime.py``); a load replica killed inside its transaction loses and duplicates
nothing (``tests/faults/test_faults_fast.py``).

The sink writes a batch and its ledger row in one transaction, so a cut connection rolls both back and
the retried batch lands exactly once; the checks compare the table with the ledger of generated rows.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from shared.contracts import EventKind, Stage
from tests.faults.harness import RunWatcher, assert_exactly_once, orders_run, running_system
from tests.faults.servers import private_postgres, restart_postgres, terminate_backends, with_application_name

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 1, "load": 2}


class BackendKiller:
    """Terminates the load service's backends that are inside a transaction, from a thread, until it has
    cut ``limit`` of them (then the run is left to finish)."""

    def __init__(self, dsn: str, application_name: str, limit: int):
        self.dsn, self.application_name, self.limit = dsn, application_name, limit
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackendKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while self.killed < self.limit and not self._stop.wait(0.02):
            self.killed += terminate_backends(self.dsn, self.application_name)


def test_load_backends_terminated_mid_transaction_lose_and_duplicate_nothing(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    application_name = f"aoetl-faults-{uuid.uuid4().hex[:8]}"
    load_dsn = with_application_name(postgres_dsn, application_name)
    run = orders_run(tmp_path / "in", "pg-terminate", 60_000, seed=41, batch_rows=3_000)
    with running_system(kafka_bootstrap, load_dsn, REPLICAS) as system, RunWatcher(system) as watcher:
        watcher.submit(run)
        watcher.wait_stage(run.run_id, Stage.TRANSFORM)
        with BackendKiller(postgres_dsn, application_name, limit=6) as killer:
            result = watcher.await_result(run.run_id)
    assert killer.killed >= 1, "no load backend was caught inside a transaction"
    assert_exactly_once(postgres_dsn, run, result)


def test_postgres_restart_mid_run_loses_and_duplicates_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = orders_run(tmp_path / "in", "pg-restart", 60_000, seed=42, batch_rows=2_000)
    with (
        private_postgres() as pg,
        running_system(kafka_bootstrap, pg.dsn, REPLICAS) as system,
        RunWatcher(system) as watcher,
    ):
        watcher.submit(run)
        watcher.wait_stage(run.run_id, Stage.LOAD, EventKind.BATCH_LOADED)
        restart_postgres(pg)
        result = watcher.await_result(run.run_id)
        assert_exactly_once(pg.dsn, run, result)
