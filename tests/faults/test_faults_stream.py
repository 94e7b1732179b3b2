"""Fault injection on a continuous pipeline: an extract replica SIGKILLed while events stream in. Its source
partitions move to the surviving replica (the stream's consumer group), which resumes from the offsets
committed with the last batch: every event reaches PostgreSQL exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from services.extract.streams import stream_group
from shared.contracts import RunStatus
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import await_result
from tests.e2e.test_streaming import EVENT_STEPS, EventProducer, new_topic
from tests.faults.harness import running_system, wait_group
from tests.helpers import wait_until

pytestmark = pytest.mark.faults

REPLICAS = {"orchestrator": 1, "extract": 2, "transform": 1, "load": 1}


@pytest.fixture
def system(kafka_bootstrap: str, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[System]:
    monkeypatch.setenv("AOETL_POSTGRES_DSN", postgres_dsn)
    with running_system(kafka_bootstrap, postgres_dsn, REPLICAS) as sys_:
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
    sent = threading.Event()
    produced = [0]

    def produce() -> None:
        for i in range(total):
            events.send({"id": i, "amount": i * 0.5}, key=f"k{i % 53}")
            produced[0] = i + 1
            if i % 100 == 99:
                time.sleep(0.1)  # pacing: a stream of ~1000 events/s for six seconds, not one burst
        events.flush()
        sent.set()

    def loaded() -> tuple[int, int]:
        with psycopg.connect(postgres_dsn) as con:
            found = con.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if found is None or found[0] is None:
                return 0, 0
            row = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        run = system.client.submit(spec)
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_until(lambda: loaded()[0] > 0, 60, message="rows loaded while events arrive")
        # both replicas in the stream's group: 2 of the 4 partitions each, so the victim holds some
        wait_group(kafka_bootstrap, group, members=2)
        victim = system.supervisor.alive("extract")[0]
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: not victim.is_alive(), 10, message="the extract replica to die")
        assert produced[0] < total, "the kill must land while events are still arriving"
        wait_group(kafka_bootstrap, group, members=1, timeout=60)  # the survivor holds all 4 now
        wait_until(sent.is_set, 120, message="every event produced")
        # the survivor takes the dead replica's partitions after the session timeout (6 s here)
        wait_until(lambda: loaded()[0] >= total, 120, interval=0.5, message=f"{total} rows loaded")
        system.client.stop(run.run_id)
        final = await_result(reader, run.run_id)
    assert final.status is RunStatus.CANCELLED, final.errors
    assert loaded() == (total, total), "exactly once: every event once, none twice"
    with psycopg.connect(postgres_dsn) as con:
        row = con.execute(f"SELECT sum(id), sum(amount) FROM {table}").fetchone()
        assert row is not None
        assert int(row[0]) == total * (total - 1) // 2
        assert float(row[1]) == pytest.approx(sum(i * 0.5 for i in range(total)))
        con.execute(f"DROP TABLE {table}")
