"""Fault injection on a continuous pipeline: an extract replica SIGKILLed while events stream in. Its source
partitions move to the surviving replica (the stream's consumer group), which resumes from the offsets
committed with the last batch: every event reaches PostgreSQL exactly once."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from services.extract.streams import stream_group
from shared.contracts import RunStatus
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import await_result
from tests.e2e.test_streaming import (
    EVENT_STEPS,
    EventProducer,
    PacedStream,
    assert_every_event_once,
    loaded_ids,
    new_topic,
)
from tests.faults.harness import running_system, wait_group
from tests.helpers import wait_until

pytestmark = pytest.mark.faults


@pytest.fixture
def system(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[System]:
    replicas = {"orchestrator": 1, "extract": 2, "transform": 1, "load": 1}  # two extracts share the stream
    with running_system(kafka_bootstrap, postgres_dsn, replicas) as sys_:
        yield sys_


def test_an_extract_replica_killed_mid_stream_loses_and_duplicates_no_event(
    system: System, kafka_bootstrap: str, postgres_dsn: str
) -> None:
    total = 6000
    topic = new_topic(kafka_bootstrap, 4)  # 4 partitions: both replicas hold some when the kill lands
    table = f"kill_stream_{uuid.uuid4().hex[:8]}"
    spec = parse_spec(
        {
            "name": f"stream-kill-{uuid.uuid4().hex[:6]}",
            "source": {"type": "kafka", "topic": topic, "format": "json"},
            "transforms": EVENT_STEPS,
            "destination": {"type": "postgres", "table": table},
            "run": {"batch_rows": 200},
        }
    )
    group = stream_group(spec.name, system.suffix)
    events = EventProducer(kafka_bootstrap, topic)

    def loaded() -> tuple[int, int]:
        return loaded_ids(postgres_dsn, table)

    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        run = system.client.submit(spec)
        stream = PacedStream(events, total, lambda i: ({"id": i, "amount": i * 0.5}, f"k{i % 53}")).start()
        wait_until(lambda: loaded()[0] > 0, 60, message="rows loaded while events arrive")
        # both replicas in the stream's group: 2 of the 4 partitions each, so the victim holds some
        wait_group(kafka_bootstrap, group, members=2)
        victim = system.supervisor.alive("extract")[0]
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: not victim.is_alive(), 10, message="the extract replica to die")
        assert stream.produced < total, "the kill must land while events are still arriving"
        wait_group(kafka_bootstrap, group, members=1, timeout=60)  # the survivor holds all 4 now
        wait_until(stream.sent.is_set, 120, message="every event produced")
        # the survivor takes the dead replica's partitions after the session timeout (6 s here)
        wait_until(lambda: loaded()[0] >= total, 120, interval=0.5, message=f"{total} rows loaded")
        system.client.stop(run.run_id)
        final = await_result(reader, run.run_id)
    assert final.status is RunStatus.CANCELLED, final.errors
    assert_every_event_once(postgres_dsn, table, total, "amount")
