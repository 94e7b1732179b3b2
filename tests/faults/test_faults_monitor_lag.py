"""The monitor's lag probe across a broker restart: the outage is a transient error of that check, the
probe recovers by itself afterwards, and the process never dies (librdkafka's admin client aborted the
process in this situation, which is why the probe uses aiokafka)."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from services.monitor.exceptions import MonitorTransientError
from services.monitor.lag import LagProbe
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import make_producer
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from tests.faults.harness import private_kafka

pytestmark = pytest.mark.faults


def test_lag_probe_reports_a_broker_outage_as_transient_and_recovers() -> None:
    with private_kafka() as node:
        topic, group = "lag-probe-topic", "lag-probe-group"
        ensure_topics(node.bootstrap, [TopicSpec(topic, 1)])
        producer = make_producer(KafkaSettings(bootstrap_servers=node.bootstrap))
        for i in range(5):
            producer.produce(topic, f"m{i}".encode())
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": node.bootstrap, "group.id": group})
        consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
        consumer.close()

        async def scenario() -> None:
            probe = LagProbe(KafkaSettings(bootstrap_servers=node.bootstrap), timeout_s=3.0)
            try:
                assert await probe.measure(group) == {topic: 3}
                await asyncio.to_thread(node.stop)
                during = await probe.measure_all([group])
                assert isinstance(during[group], MonitorTransientError), during
                await asyncio.to_thread(node.start)
                deadline = time.monotonic() + 60
                while True:  # the probe reconnects on its own: poll its next checks until one succeeds
                    after = (await probe.measure_all([group]))[group]
                    if after == {topic: 3} or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.25)  # poll interval, as tests.helpers.wait_until uses
                assert after == {topic: 3}, after
            finally:
                await probe.close()

        asyncio.run(scenario())
