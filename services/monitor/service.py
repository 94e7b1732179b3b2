"""The monitor service: watches run events, results and dead letters, raises ``Alert``s on
``Topics.ALERTS`` and exports Prometheus metrics (runs, rows per stage, batch latency, dead letters,
consumer lag per group). It also delivers the alerts to the configured HTTP endpoints (the alert router's
threads, ``services.monitor.routing``) and, when configured, emits OpenLineage run events from its fold
(``services.monitor.lineage``).

The stream processing is a faust-streaming app (see ``services.monitor.app`` for why faust and the
topology); this class only fits it into the shared service runtime: settings, JSON logs, the
/health /ready /metrics server (``run_service``) and a graceful stop on SIGTERM (exit 0).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from services.monitor.app import MonitorApp
from services.monitor.cluster import input_partitions, monitor_replication
from services.monitor.configuration import MonitorSettings
from services.monitor.exceptions import MonitorError
from services.monitor.routing.router import AlertRouter
from shared.contracts import Stage
from shared.health import ReadinessCheck
from shared.kafka.topics import Topics
from shared.runtime import BaseService
from shared.signals import GracefulShutdown

_log = logging.getLogger(__name__)


class MonitorService(BaseService[MonitorSettings]):
    name = "monitor"
    stage = Stage.MONITOR
    settings_class = MonitorSettings

    monitor: MonitorApp | None = None
    router: AlertRouter | None = None

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {
            "faust": lambda: self.monitor is not None and self.monitor.is_ready(),
        }
        if self.settings.alert_routing.endpoints:  # no endpoints: no router threads, nothing to wait for
            checks["alert-router"] = lambda: self.router is not None and self.router.is_ready()
        return checks

    def run(self, shutdown: GracefulShutdown) -> None:
        asyncio.run(self._run(shutdown))

    async def _run(self, shutdown: GracefulShutdown) -> None:
        for library in ("faust", "mode", "aiokafka", "services.monitor.transport"):
            logging.getLogger(library).setLevel(self.settings.faust_log_level)
        partitions = await asyncio.to_thread(input_partitions, self.settings)
        replication = await asyncio.to_thread(monitor_replication, self.settings)
        # Built inside the running loop: faust binds its services to the loop current at creation.
        monitor = self.monitor = MonitorApp(self.settings, self.serde, partitions, replication=replication)
        stop_requested = shutdown.asyncio_event()
        await monitor.app.start()
        _log.info("monitor app %s started (input partitions %s)", self.settings.app_id, partitions)
        loop = asyncio.get_running_loop()

        def router_failed(name: str, exc: BaseException) -> None:  # called from a router thread
            loop.call_soon_threadsafe(monitor.supervision.fail, name, exc)

        # Its own consumer threads (services.monitor.routing); a failure of one stops the monitor.
        router = self.router = AlertRouter(
            self.settings.alert_routing,
            kafka=self.settings.kafka,
            topic=self.settings.topic(Topics.ALERTS),
            topic_suffix=self.settings.topic_suffix,
            serde=self.serde,
            on_failure=router_failed,
            dead_letter_topic=self.settings.topic(Topics.DEAD_LETTERS),
        )
        router.start()
        try:
            waits = {
                asyncio.ensure_future(stop_requested.wait()),
                asyncio.ensure_future(monitor.failed.wait()),
            }
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        finally:
            await asyncio.to_thread(router.stop)  # in-flight deliveries finish and are committed
            # Commits the offsets of processed messages and flushes the changelogs.
            await monitor.app.stop()
            await monitor.close()
        if monitor.failure is not None:
            raise MonitorError(
                f"the monitor stopped after a failure: {monitor.failure!r}"
            ) from monitor.failure
