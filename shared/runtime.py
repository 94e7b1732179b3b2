"""What every service process does around its own work: load and validate every setting, configure
logging, serve /health /ready /metrics, handle SIGTERM, publish the writer schemas, run the service, exit 0
after a graceful stop. What start-up made is frozen out of the garbage collector's full collections,
and collections are made rarer (``prepare_garbage_collector``), just before the service runs.

Every setting is read at start-up (the service's settings class, the spec policy, its serde's, whatever
its constructor reads), so a bad value exits with ``EXIT_BAD_CONFIGURATION`` before the first message,
never at the first request that happens to need it. The secrets among them (every ``SecretStr`` of the
settings, the declared connections' secrets) are registered for redaction before anything is logged.
Installed plugins are loaded at start-up too (``shared.plugins``): one that cannot be loaded is one error
line naming its entry point and why, and the service starts without it (its type is then unknown).

``BaseService`` is the contract (``run(shutdown)`` plus readiness checks); ``ProcessorService`` is the base
of the five Kafka-consuming services, wiring a ``ProcessingLoop`` to a ``handle`` method; ``run_service``
is what each ``__main__`` calls. The loop itself lives in ``shared.processing``; its names are re-exported
here so a service imports everything from one place.
"""

from __future__ import annotations

import gc
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from confluent_kafka import TopicPartition

from shared.contracts import Contract, Stage
from shared.errors import ConfigurationError
from shared.health import HealthServer, ReadinessCheck, write_port_file
from shared.kafka.types import Serde
from shared.logging import configure_logging
from shared.plugins import report_plugins
from shared.policy import PolicySettings, load_policy
from shared.policy.connections import register_declared_secrets
from shared.processing import Handler, LoopConfig, MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.processing.budget import TransactionBudget
from shared.redaction import register_secrets_of
from shared.settings import ProcessorSettings, ServiceSettings, load_settings
from shared.signals import GracefulShutdown, install_signal_handlers
from shared.startup import await_kafka_access, publish_writer_schemas, service_serde
from shared.tracing.setup import configure as configure_tracing

__all__ = [
    "BaseService",
    "Handler",
    "LoopConfig",
    "MessageContext",
    "Output",
    "ProcessingLoop",
    "ProcessorService",
    "RetryPolicy",
    "default_serde",
    "run_service",
]

_log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
P = TypeVar("P", bound=ProcessorSettings)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIGURATION = 2


def default_serde(settings: ServiceSettings) -> Serde:
    """The Avro serde, resolving unknown writer schemas from the system's schemas topic on our cluster."""
    return service_serde(settings)


class BaseService(ABC, Generic[S]):
    name: ClassVar[str]  # "extract": logger field, transactional id prefix
    stage: ClassVar[Stage]
    settings_class: ClassVar[type[ServiceSettings]]

    def __init__(self, settings: S, *, serde: Serde | None = None):
        self.settings = settings
        # built now, not on first use: its settings are validated at start-up with the service's own
        self._serde = serde if serde is not None else default_serde(settings)

    @property
    def serde(self) -> Serde:
        return self._serde

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        """Named checks that must all pass for /ready to answer 200."""
        return {}

    @abstractmethod
    def run(self, shutdown: GracefulShutdown) -> None:
        """Do the work until ``shutdown`` is requested, then return (after finishing the current unit)."""


class ProcessorService(BaseService[P]):
    """A service whose work is ``handle(message) -> outputs`` over its input topics, exactly once per hop
    (or at least once with an idempotent effect, when ``transactional`` is False)."""

    transactional: ClassVar[bool] = True

    def __init__(self, settings: P, *, serde: Serde | None = None):
        super().__init__(settings, serde=serde)
        tick_interval = getattr(settings, "tick_interval_s", None)
        self.loop = ProcessingLoop(
            settings.kafka,
            self.loop_config(),
            self.handle,
            self.serde,
            on_failure=self.on_failure,
            tick=self.tick if tick_interval else None,
            tick_interval=tick_interval or 1.0,
            on_assign=self.on_assign,
            on_rollback=self.on_rollback,
        )

    @abstractmethod
    def input_types(self) -> Mapping[str, type[Contract]]:
        """Input topic (as ``settings.topic(Topics.X)``) -> the contract its messages carry."""

    def handle(self, value: Contract, context: MessageContext) -> Iterable[Output]:
        """Process one decoded message; return (or yield) what to produce. Raise a ``TransientError`` to
        retry it, any other exception to dead-letter it. The skeleton publishes nothing."""
        return []

    def on_failure(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> Sequence[Output]:
        """Outputs to produce beside the dead letter of a message that failed for good (``value`` is None
        when it could not even be decoded): typically an event telling the orchestrator."""
        return []

    def tick(self) -> Sequence[Output]:
        """Periodic work on the loop thread (only when the settings have ``tick_interval_s``)."""
        return []

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Called with the new assignment, before any of its messages is handled."""

    def on_rollback(self, consumer: Any) -> None:
        """After an aborted transaction (the consumer is back at the committed offsets): rebuild any state
        derived from the messages, since what the aborted batch changed never happened."""

    def loop_config(self) -> LoopConfig:
        s = self.settings
        return LoopConfig(
            service=self.name,
            stage=self.stage,
            instance_id=s.instance_id,
            group_id=s.group_id,
            input_types=self.input_types(),
            dead_letter_topic=s.dead_letter_topic,
            topic_suffix=s.topic_suffix,
            transactional=self.transactional,
            max_batch=s.max_batch,
            budget=TransactionBudget(max_bytes=s.transaction_max_bytes, max_seconds=s.transaction_max_s),
            poll_timeout=s.poll_timeout_s,
            kafka_timeout=s.kafka_timeout_s,
            consumer_overrides={
                "session.timeout.ms": s.session_timeout_ms,
                "queued.max.messages.kbytes": s.consumer_prefetch_kib,
                # With a full queue librdkafka waits this long before fetching again (default 1 s):
                # with a bounded queue that wait would be paid on nearly every message.
                "fetch.queue.backoff.ms": 5,
            },
            producer_overrides={"compression.type": s.producer_compression}
            | ({"transaction.timeout.ms": s.transaction_timeout_ms} if self.transactional else {}),
            retry=RetryPolicy(
                initial_delay=s.retry_initial_delay_s,
                max_delay=s.retry_max_delay_s,
                max_attempts=s.retry_max_attempts,
            ),
        )

    def readiness_checks(self) -> Mapping[str, ReadinessCheck]:
        return {"kafka": self.loop.is_ready}

    def run(self, shutdown: GracefulShutdown) -> None:
        self.loop.run(shutdown.event)


def run_service(service_class: type[BaseService[Any]]) -> int:
    """The whole life of a service process; returns the exit code for ``SystemExit``."""
    try:
        settings = load_settings(service_class.settings_class)
        policy: PolicySettings = load_policy()
    except ConfigurationError as exc:
        # Logging is not configured yet (its level is a setting): say it plainly on stderr.
        print(f"{service_class.name}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIGURATION
    register_secrets_of(settings)
    register_declared_secrets(policy)
    configure_logging(
        service=service_class.name,
        instance=settings.instance_id,
        level=settings.log_level,
        log_format=settings.log_format,
    )
    _log.info("starting with settings %s", settings.redacted())
    report_plugins(_log)  # a plugin that fails to load is one error line here, and the service carries on
    shutdown = install_signal_handlers()
    try:
        # before the service is built, so every span it makes goes to the configured exporter
        configure_tracing(service_class.name, settings.instance_id)
        service = service_class(settings)
    except ConfigurationError as exc:
        _log.error("cannot start: %s", exc)
        return EXIT_BAD_CONFIGURATION
    health = HealthServer(settings.http_host, settings.http_port, service.readiness_checks()).start()
    _log.info("serving /health /ready /metrics on http://%s:%d", health.host, health.port)
    if settings.port_file is not None:
        write_port_file(settings.port_file, health.port)
    try:
        return _publish_and_run(service, shutdown)
    finally:
        health.stop()
        if settings.port_file is not None:
            settings.port_file.unlink(missing_ok=True)


# Allocations (net of frees) between two young collections; CPython's default is 700. A full collection
# comes after every 100 young ones (10 x 10), so this also spaces the full ones: with 700 the gateway ran
# ~5 full collections per 4,000 webhook deliveries, each scanning every view entry made since start-up
# (60-170 ms, measured under load); a young collection of 10,000 objects takes ~1 ms.
YOUNG_COLLECTION_THRESHOLD = 10_000


def prepare_garbage_collector() -> None:
    """Move what start-up made (modules, schemas, models, the service itself: ~140k objects, alive for the
    process's life) out of the collector's reach, after collecting the start-up garbage so none of it is
    kept, and collect less often (``YOUNG_COLLECTION_THRESHOLD``). A full collection then scans only what
    was made since: without the freeze every full collection walked them all, ~180 ms holding the GIL
    (measured in the gateway under load: every request in flight waited that long), for nothing it could
    ever free. Nothing frozen is kept beyond its references: only cyclic garbage is left to the
    collector, and start-up's was collected first."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def _publish_and_run(service: BaseService[Any], shutdown: GracefulShutdown) -> int:
    try:
        # refused credentials are a configuration error, found before anything else touches Kafka
        connected = await_kafka_access(service.settings, shutdown)
        # before the first message is produced: a consumer must be able to decode everything we write
        published = connected and publish_writer_schemas(service.settings, service.serde, shutdown)
    except ConfigurationError as exc:  # e.g. Kafka properties librdkafka refuses, found on first use
        _log.error("cannot start: %s", exc)
        return EXIT_BAD_CONFIGURATION
    try:
        if published:
            prepare_garbage_collector()
            service.run(shutdown)
    except Exception:
        _log.exception("%s failed", service.name)
        return EXIT_FAILED
    _log.info("stopped cleanly (%s)", shutdown.reason or "work finished")
    return EXIT_OK
