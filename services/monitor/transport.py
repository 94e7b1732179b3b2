"""A faust Kafka transport whose consumer reads ``read_committed`` and whose topics follow the one
replication rule.

faust-streaming's aiokafka driver reads ``read_uncommitted`` unless the app itself runs with
``processing_guarantee="exactly_once"``. Our data plane writes its events, results and dead letters in
Kafka transactions and aborts one on every failure or retry; read uncommitted, the monitor would count
aborted batches and dead letters (and could alert on them). faust's own exactly-once mode is not an
option here: it ties one transactional producer to each *output* partition, which does not fit a service
whose outputs (alerts, changelogs) are not co-partitioned with its inputs. The alerts are exactly once
by other means (``services.monitor.alerts``).

Every topic faust declares (the tables' changelogs, the housekeeping topic, the assignor's leader topic)
is created here with the deployment's ``shared.kafka.replication`` rule: 3 replicas and
``min.insync.replicas=2`` on a cluster of three brokers, 1 on a single one, as every topic of
``shared.kafka.topics``. faust alone would take one factor for all (``topic_replication_factor``) and leave
``min.insync.replicas`` to the broker default, which a cluster may set above the factor (then no write
with ``acks=all`` succeeds) or leave at 1 (then an acknowledged changelog write may live on one broker).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from shared.kafka.replication import Replication


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
    """Install with ``app.transport = ReadCommittedTransport(app.conf.broker_consumer, app, replication)``
    before anything uses the app's producer (faust declares topics through it)."""

    Consumer = _ReadCommittedConsumer

    def __init__(self, url: Any, app: Any, replication: Replication, **kwargs: Any) -> None:
        super().__init__(url, app, **kwargs)
        self.replication = replication

    async def _create_topic(
        self,
        owner: Any,
        client: Any,
        topic: str,
        partitions: int,
        replication: int,
        *,
        config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # The rule's factor, whatever faust asked for; the topic's own settings win over the rule's
        # min.insync (as in shared.kafka.admin), but no topic of faust's sets one.
        await super()._create_topic(
            owner,
            client,
            topic,
            partitions,
            self.replication.factor,
            config=self.replication.topic_config() | dict(config or {}),
            **kwargs,
        )
