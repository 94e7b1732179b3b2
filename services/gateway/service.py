"""The gateway service: webhooks, definitions and run submissions over HTTP, onto Kafka, each API call
authenticated (API keys from the keys topic the bus follows, OIDC tokens; ``access.py``).

``run_service`` gives it what every service has (settings, JSON logs, SIGTERM handling, /health /ready
/metrics on ``http_port`` for the supervisor and probes). ``run`` then serves the HTTP API with uvicorn on
``api_port`` (the API app answers /health /ready /metrics too, so a load balancer can probe that port) and
runs the Kafka bus (``bus.py``) on the same event loop, watched for how long it is held
(``loopwatch.py``: loop lag and GC pauses as metrics).

The loop is uvloop's and the HTTP parser httptools (both C): every webhook is answered only after Kafka
acknowledged its records, so whatever CPU the loop spends per delivery (parsing the request, the sockets of
both the HTTP client and the broker) is latency of every request in flight at the time, and the pure-Python
pair (asyncio's own loop, h11) spends more of it per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator, Mapping

import uvicorn
import uvloop

from services.gateway.app import create_app
from services.gateway.bus import KafkaBus
from services.gateway.configuration import GatewaySettings
from services.gateway.core import Gateway
from services.gateway.deliveries import DeliveryBook
from services.gateway.loopwatch import GcPauses, LoopLagProbe
from services.gateway.records import RecordBook
from services.gateway.state import DefinitionCatalog, RunLedger, RunView
from shared.auth.keys import KeyRing
from shared.auth.oidc import OidcVerifier
from shared.contracts import Stage
from shared.health import ReadinessCheck, write_port_file
from shared.kafka.types import Serde
from shared.runtime import BaseService, prepare_garbage_collector
from shared.signals import GracefulShutdown

_log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``GracefulShutdown`` owns SIGTERM/SIGINT for the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class GatewayService(BaseService[GatewaySettings]):
    name = "gateway"
    stage = Stage.GATEWAY
    settings_class = GatewaySettings

    def __init__(self, settings: GatewaySettings, *, serde: Serde | None = None):
        super().__init__(settings, serde=serde)
        self.bus = KafkaBus(
            settings,
            self.serde,
            ledger=RunLedger(settings.dedupe_capacity),
            catalog=DefinitionCatalog(),
            runs=RunView(settings.runs_capacity),
            deliveries=DeliveryBook(settings.delivery_memory_s, settings.delivery_capacity),
            keys=KeyRing(settings.auth_keys_max_staleness_s),
            records=RecordBook(settings.records_per_tenant),
        )
        oidc = OidcVerifier(settings.oidc) if settings.oidc.enabled else None
        self.gateway = Gateway(
            settings,
            self.bus,
            self.bus.ledger,
            self.bus.catalog,
            self.bus.runs,
            self.bus.deliveries,
            self.bus.keys,
            oidc,
            self.bus.records,
        )
        self.api_port: int | None = None
        if not settings.authenticates:
            _log.warning(
                "no authentication method configured (AOETL_AUTH_API_KEYS, AOETL_OIDC_*): every API call"
                " but the probes and webhooks is refused (401)"
            )

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {"kafka": lambda: self.bus.ready}
        if self.settings.auth_api_keys:
            checks["api_keys"] = self.bus.keys.is_fresh
        return checks

    def run(self, shutdown: GracefulShutdown) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self.serve(shutdown))

    async def serve(self, shutdown: GracefulShutdown) -> None:
        stopped = shutdown.asyncio_event()
        s = self.settings
        config = uvicorn.Config(
            create_app(self.gateway),
            host=s.api_host,
            port=s.api_port,
            http="httptools",  # not "auto": a missing parser must not silently fall back to h11
            log_config=None,  # keep our JSON logging
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
        server = _Server(config)
        prepare_garbage_collector()  # again: the app (routes, their models) is made here, after start-up
        gc_pauses = GcPauses().install()
        probe_task = asyncio.create_task(LoopLagProbe().run(stopped), name="gateway-loop-lag")
        bus_task = asyncio.create_task(self.bus.run(stopped), name="gateway-bus")
        server_task = asyncio.create_task(server.serve(), name="gateway-http")
        stop_task = asyncio.create_task(stopped.wait(), name="gateway-stop")
        try:
            await self._announce(server, server_task)
            done, _ = await asyncio.wait(
                [bus_task, server_task, stop_task], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done & {bus_task, server_task}:
                task.result()  # a crashed bus or server fails the service (exit 1), not a silent zombie
                raise RuntimeError(f"{task.get_name()} ended unexpectedly")
        finally:
            server.should_exit = True
            await asyncio.gather(server_task, return_exceptions=True)  # the answers in flight first,
            await self.gateway.deliveries.settle(s.send_timeout_s)  # then the STARTED records they left
            stopped.set()
            await asyncio.gather(server_task, bus_task, stop_task, probe_task, return_exceptions=True)
            gc_pauses.uninstall()
            if s.api_port_file is not None:
                s.api_port_file.unlink(missing_ok=True)

    async def _announce(self, server: uvicorn.Server, server_task: asyncio.Task[None]) -> None:
        while not server.started:
            if server_task.done():
                server_task.result()
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.02)
        self.api_port = int(server.servers[0].sockets[0].getsockname()[1])
        _log.info(
            "gateway API on http://%s:%d (OpenAPI at /openapi.json)", self.settings.api_host, self.api_port
        )
        if self.settings.api_port_file is not None:
            write_port_file(self.settings.api_port_file, self.api_port)
