"""A faust Kafka transport whose consumer reads ``read_committed``.

faust-streaming's aiokafka driver reads ``read_uncommitted`` unless the app itself runs with
``processing_guarantee="exactly_once"``. Our data plane writes its events, results and dead letters in
Kafka transactions and aborts one on every failure or retry; read uncommitted, the monitor would count
aborted batches and dead letters (and could alert on them). faust's own exactly-once mode is not an
option here: it ties one transactional producer to each *output* partition, which does not fit a service
whose outputs (alerts, changelogs) are not co-partitioned with its inputs. The alerts are exactly once
by other means (``services.monitor.alerts``).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor argument as is and hands it to its fetcher on start().
        consumer._isolation_level = "read_committed"
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(faust_aiokafka.Transport):
    """Install with ``app.transport = ReadCommittedTransport(app.conf.broker_consumer, app)``."""

    Consumer = _ReadCommittedConsumer
