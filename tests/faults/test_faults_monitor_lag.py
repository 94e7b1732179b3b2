"""The monitor's lag probe across a broker restart: the outage is a transient error of that check, the
probe recovers by itself afterwards, and the process never dies (librdkafka's admin client aborted the
process in this situation, which is why the probe uses aiokafka)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition

from services.monitor.exceptions import MonitorTransientError
from services.monitor.lag import LagProbe
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import make_producer
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from tests.faults.servers import private_kafka
from tests.helpers import wait_until

pytestmark = pytest.mark.faults


def test_lag_probe_reports_a_broker_outage_as_transient_and_recovers() -> None:
    with private_kafka() as node:
        topic, group = "lag-probe-topic", "lag-probe-group"
        ensure_topics(KafkaSettings(bootstrap_servers=node.bootstrap), [TopicSpec(topic, 1)])
        producer = make_producer(KafkaSettings(bootstrap_servers=node.bootstrap))
        for i in range(5):
            producer.produce(topic, f"m{i}".encode())
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group})
        consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
        consumer.close()

        # One loop for the probe's whole life (its clients belong to it); each check is run to completion.
        loop = asyncio.new_event_loop()

        async def new_probe() -> LagProbe:  # aiokafka clients are made inside their loop
            return LagProbe(KafkaSettings(bootstrap_servers=node.bootstrap), timeout_s=3.0)

        probe = loop.run_until_complete(new_probe())

        def lag() -> dict[str, int] | MonitorTransientError:
            return loop.run_until_complete(probe.measure_all([group]))[group]

        try:
            assert lag() == {topic: 3}
            node.stop()
            assert isinstance(lag(), MonitorTransientError)
            node.start()
            # the probe reconnects on its own: one of its next checks succeeds
            wait_until(lambda: lag() == {topic: 3}, timeout=60, message="the lag check to recover")
        finally:
            loop.run_until_complete(probe.close())
            loop.close()
