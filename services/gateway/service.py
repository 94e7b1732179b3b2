"""The gateway service: turns API calls into ``PipelineRequest`` messages on ``Topics.REQUESTS``.

The skeleton only holds an idempotent producer and proves it reaches the brokers; the HTTP API (FastAPI on
aiokafka) replaces ``run`` later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaException

from services.gateway.configuration import GatewaySettings
from shared.contracts import Stage
from shared.health import ReadinessCheck
from shared.kafka.clients import make_producer
from shared.kafka.types import KafkaProducer, Serde
from shared.processing import RetryPolicy
from shared.runtime import BaseService
from shared.signals import GracefulShutdown

_log = logging.getLogger(__name__)


class GatewayService(BaseService[GatewaySettings]):
    name = "gateway"
    stage = Stage.GATEWAY
    settings_class = GatewaySettings

    def __init__(self, settings: GatewaySettings, *, serde: Serde | None = None):
        super().__init__(settings, serde=serde)
        self.producer: KafkaProducer | None = None
        self._connected = False

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return {"kafka": lambda: self._connected}

    def run(self, shutdown: GracefulShutdown) -> None:
        self.producer = make_producer(self.settings.kafka)
        self._connect(shutdown)
        while not shutdown.wait(1.0):
            pass
        remaining = self.producer.flush(self.settings.connect_timeout_s)
        if remaining:
            _log.warning("%d record(s) undelivered at shutdown", remaining)

    def _connect(self, shutdown: GracefulShutdown) -> None:
        backoff = RetryPolicy()
        attempt = 0
        while not shutdown.requested:
            assert self.producer is not None
            try:
                self.producer.list_topics(timeout=self.settings.connect_timeout_s)
                self._connected = True
                _log.info("connected to %s", self.settings.kafka.bootstrap_servers)
                return
            except KafkaException as exc:
                attempt += 1
                _log.warning("kafka not reachable yet (%s)", exc)
                shutdown.wait(backoff.delay(attempt))
