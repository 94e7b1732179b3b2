"""Fault injection on a continuous pipeline: an extract replica SIGKILLed while events stream in. Its source
partitions move to the surviving replica (the stream's consumer group), which resumes from the offsets
committed with the last batch: every event reaches PostgreSQL exactly once.

The system runs the services' default topology, extract chaining the transform stage to its reads
(``services.extract.handoff``): no transform service, the transformed batches and their events leave in
the window's own transaction. The e2e suites run the stages apart (``tests.e2e.conftest``)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import System
from tests.faults.harness import running_system
from tests.faults.kafka_views import wait_group
from tests.faults.topic_readers import continuous_run
from tests.helpers import wait_until

pytestmark = pytest.mark.faults


@pytest.fixture
def system(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[System]:
    replicas = {"orchestrator": 1, "extract": 2, "load": 1}  # two extracts share the stream
    chained = {"AOETL_CHAIN_TRANSFORM": "true"}
    with running_system(kafka_bootstrap, postgres_dsn, replicas, chained) as sys_:
        yield sys_


def test_an_extract_replica_killed_mid_stream_loses_and_duplicates_no_event(
    system: System, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    # 4 partitions: both replicas hold some when the kill lands
    with continuous_run(
        system, kafka_bootstrap, postgres_dsn, "stream-kill", total=6000, partitions=4
    ) as run:
        run.wait_loading()
        # both replicas in the stream's group: 2 of the 4 partitions each, so the victim holds some
        wait_group(kafka_bootstrap, run.group, members=2)
        victim = system.supervisor.alive("extract")[0]
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: not victim.is_alive(), 10, message="the extract replica to die")
        assert run.stream.produced < run.total, "the kill must land while events are still arriving"
        wait_group(kafka_bootstrap, run.group, members=1, timeout=60)  # the survivor holds all 4 now
        # the survivor takes the dead replica's partitions after the session timeout (6 s here)
        run.wait_delivered()
        run.assert_exactly_once()
