"""Fault injection on the broker under the topic readers (slow: ``make chaos`` only): the one Kafka broker
stopped and started again (same port, same data) while events stream into a continuous pipeline, and
while events on a trigger topic start runs. A private broker, never the session's or the shared one.

The readers' transactions (batches or requests, with the group's offsets) that the restart cuts must be
aborted or finished and the readers must go on from what the group committed: every event reaches
PostgreSQL exactly once, a trigger starts exactly one run per window, and no service dies.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import SHORT_KAFKA_CALLS, running_system
from tests.faults.servers import private_kafka, restart_kafka
from tests.faults.topic_readers import READERS, TopicReader

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture(autouse=True)
def short_kafka_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(*SHORT_KAFKA_CALLS)


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: reader.id)
def test_a_broker_restart_under_a_topic_reader_loses_and_duplicates_nothing(
    postgres_dsn: str, reader: TopicReader
) -> None:
    with (
        private_kafka() as kafka,
        running_system(kafka.bootstrap, postgres_dsn, reader.replicas) as system,
        reader.feed(system, kafka.bootstrap, postgres_dsn, "broker") as feed,
    ):
        feed.wait_loading()
        assert feed.stream.produced < feed.total, "the restart must land while events are still arriving"
        restart_kafka(kafka)
        # every transactional stage may meet the hung call once after the restart, one after another
        feed.wait_delivered(timeout=150)
        feed.assert_exactly_once()
        dead = [f"{p.name}[{p.replica}]" for p in system.supervisor.processes() if not p.is_alive()]
        assert not dead, f"died with the broker: {dead}"
