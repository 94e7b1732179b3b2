"""Every Kafka client of the system, built in one place from one ``KafkaSettings``.

``KafkaClients(settings)`` is the connection object (in the spirit of quix-streams' ``ConnectionConfig``):
it holds the connection and security settings (bootstrap servers, security protocol, SASL mechanism,
username and password, CA file) and is the only code that turns them into a client, so a client can never
be built without them. It builds every kind the system uses: confluent-kafka producer, transactional
producer, consumer and admin client; aiokafka producer, consumer and admin client; and faust's broker
configuration. Client-specific tuning is layered *on top of* the connection properties, and keyword
overrides are passed through verbatim (librdkafka's dotted names, so ``**{"linger.ms": 50}``; aiokafka's
keyword names), except that a bootstrap, security, SASL or SSL property cannot be overridden: that is how
a client would silently lose its credentials.

Defaults, and why:

* producers are idempotent with ``acks=all``: a retried send never duplicates or reorders a record, and a
  record counts as sent only once every in-sync replica has it;
* consumers never auto-commit (the runtime commits offsets inside a transaction, or after the effect),
  start at the earliest offset when the group is new (nothing published before a first deployment is
  skipped), read only committed transactional data, and use the *range* assignor, which gives one member
  the same partition numbers of every subscribed topic, so co-partitioned topics (requests and events,
  both keyed by run id) are processed together;
* every producer, librdkafka or aiokafka, hashes keys with murmur2 as the Java client does, so a key goes
  to the same partition whichever client sends it (co-partitioning holds across clients);
* message size limits match the 16 MiB ``max.message.bytes`` of the data topics;
* transactional producers retry after 5 ms (doubling up to 100 ms), not librdkafka's 100 ms: a
  transaction's ``send_offsets_to_transaction`` (AddOffsetsToTxn) sent within a few ms of the previous
  commit is answered CONCURRENT_TRANSACTIONS until the coordinator has written that commit's markers (it
  answers EndTxn before them), and librdkafka retries it after ``retry.backoff.ms``. Back to back, every
  transaction waited the whole 100 ms for a wait of a few ms (send_offsets p50 102 ms -> 12 ms at 5 ms,
  librdkafka 2.16, Kafka 4.1); a continuous pipeline at a 30 ms window hit it in one commit in a few
  (commit p99 up to 250 ms). The cap keeps retries against a broker that is really down as sparse as
  before after a few attempts (librdkafka's exponential backoff, KIP-580).

``make_producer`` / ``make_consumer`` / ``make_aio_producer`` / ``make_aio_consumer`` are the same
factories as functions of the settings; delivery checking (``DeliveryReports``, ``flush_checked``,
``produce_sync``) lives in ``shared.kafka.delivery`` and is re-exported here.

Cold start: aiokafka is imported when the first asyncio client is built, not with this module, so the CLI
and the confluent-kafka services never pay for it (about 50 ms). Its classes are still attributes of this
module (``AIOKafkaProducer``..., resolved on first use), so a test can replace them like the others.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from shared.errors import ConfigurationError
from shared.kafka.delivery import DeliveryReports, KafkaDeliveryError, flush_checked, produce_sync
from shared.settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = [
    "DEFAULT_TRANSACTION_TIMEOUT_MS",
    "MAX_MESSAGE_BYTES",
    "DeliveryReports",
    "KafkaClients",
    "KafkaDeliveryError",
    "flush_checked",
    "make_aio_consumer",
    "make_aio_producer",
    "make_consumer",
    "make_producer",
    "produce_sync",
]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
TRANSACTION_RETRY_BACKOFF_MS = 5
TRANSACTION_RETRY_BACKOFF_MAX_MS = 100

_log = logging.getLogger("aoetl.kafka")

T = TypeVar("T", Producer, Consumer, AdminClient)

# cold start: the aiokafka names this module offers, and the module each is imported from at first use
_AIOKAFKA_NAMES = {
    "AIOKafkaProducer": "aiokafka",
    "AIOKafkaConsumer": "aiokafka",
    "AIOKafkaAdminClient": "aiokafka.admin",
    "RangePartitionAssignor": "aiokafka.coordinator.assignors.range",
}


def __getattr__(name: str) -> Any:
    """An aiokafka class, imported the first time it is asked for (PEP 562), then a plain attribute."""
    module = _AIOKAFKA_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _aiokafka(name: str) -> Any:
    """What the asyncio builders construct with: this module's attribute ``name`` (a replacement a test
    set, else the aiokafka class); a global lookup alone would not reach ``__getattr__``."""
    return globals()[name] if name in globals() else __getattr__(name)


def _log_client_error(error: KafkaError) -> None:
    # librdkafka reports cluster-wide trouble (all brokers down...) here; it keeps retrying by itself.
    level = logging.ERROR if error.fatal() else logging.WARNING
    _log.log(level, "kafka client error: %s", error)


# Where to connect and how to authenticate: only KafkaSettings may set these (librdkafka and aiokafka names).
_PROTECTED_PREFIXES = ("bootstrap", "security", "sasl", "ssl")


def _layer(connection: dict[str, Any], tuning: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Connection properties, then the client's defaults, then the caller's overrides. An override may not
    replace a connection or security property: that is how a client would silently lose its credentials."""
    clash = sorted(key for key in overrides if key.startswith(_PROTECTED_PREFIXES))
    if clash:
        raise ConfigurationError(f"Kafka properties {clash} come from KafkaSettings, not from overrides")
    return {**connection, **tuning, **overrides}


def _built(kind: type[T], config: dict[str, Any]) -> T:
    """librdkafka checks its properties when a client is created; a refusal there (an unknown property, an
    unreadable CA file) is a configuration error, not a broker outage to retry."""
    try:
        return kind(config)
    except KafkaException as exc:
        raise ConfigurationError(f"Kafka {kind.__name__} configuration refused: {exc}") from exc


class KafkaClients:
    """Builds every Kafka client from one ``KafkaSettings``. Cheap to create; holds no connection itself.

    Each ``*_config`` method returns the exact configuration its client is built with, so what reaches a
    client can be inspected without a broker."""

    def __init__(self, settings: KafkaSettings):
        self.settings = settings

    def __repr__(self) -> str:  # never the password: the settings' repr masks SecretStr
        return f"KafkaClients({self.settings.bootstrap_servers!r}, {self.settings.security_protocol})"

    # ------------------------------------------------------------------- confluent-kafka (librdkafka)
    def connection_config(self) -> dict[str, Any]:
        """librdkafka connection and security properties, with our logger and error callback."""
        return {**self.settings.to_confluent(), "logger": _log, "error_cb": _log_client_error}

    def producer_config(self, *, transactional_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        tuning: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": MAX_MESSAGE_BYTES,
            # Java's (and aiokafka's, faust's) key hash: librdkafka's own default (CRC32) would put a run id
            # the gateway sends with aiokafka on another partition than the same id sent from here, and
            # requests and events would no longer be co-partitioned.
            "partitioner": "murmur2_random",
        }
        if transactional_id is not None:
            tuning["transactional.id"] = transactional_id
            tuning["transaction.timeout.ms"] = DEFAULT_TRANSACTION_TIMEOUT_MS
            # a coordinator busy with the previous commit's markers answers within ms (module docstring)
            tuning["retry.backoff.ms"] = TRANSACTION_RETRY_BACKOFF_MS
            tuning["retry.backoff.max.ms"] = TRANSACTION_RETRY_BACKOFF_MAX_MS
        return _layer(self.connection_config(), tuning, overrides)

    def producer(self, **overrides: Any) -> Producer:
        """An idempotent, non-transactional producer."""
        return _built(Producer, self.producer_config(**overrides))

    def transactional_producer(self, transactional_id: str, **overrides: Any) -> Producer:
        """A transactional producer: call ``init_transactions`` before the first ``begin_transaction``."""
        return _built(Producer, self.producer_config(transactional_id=transactional_id, **overrides))

    def consumer_config(
        self,
        group_id: str,
        *,
        isolation_level: str = "read_committed",
        partition_eof: bool = False,
        **overrides: Any,
    ) -> dict[str, Any]:
        tuning: dict[str, Any] = {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation_level,
            "partition.assignment.strategy": "range",
            "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
        }
        if partition_eof:  # an end-of-partition event, for readers that read "up to now"
            tuning["enable.partition.eof"] = True
        return _layer(self.connection_config(), tuning, overrides)

    def consumer(
        self,
        group_id: str,
        *,
        isolation_level: str = "read_committed",
        partition_eof: bool = False,
        **overrides: Any,
    ) -> Consumer:
        """A consumer in ``group_id``. Readers that only ``assign`` (never commit) pass a unique group id:
        librdkafka requires one even when it is never used."""
        config = self.consumer_config(
            group_id, isolation_level=isolation_level, partition_eof=partition_eof, **overrides
        )
        return _built(Consumer, config)

    def admin_config(self, **overrides: Any) -> dict[str, Any]:
        return _layer(self.connection_config(), {}, overrides)

    def admin(self, **overrides: Any) -> AdminClient:
        return _built(AdminClient, self.admin_config(**overrides))

    # --------------------------------------------------------------------------------------- aiokafka
    def aio_connection_config(self) -> dict[str, Any]:
        """aiokafka connection and security keyword arguments (a fresh TLS context per call)."""
        return self.settings.to_aiokafka()

    def aio_producer_config(self, *, transactional_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        tuning: dict[str, Any] = {
            "enable_idempotence": True,
            "acks": "all",
            "max_request_size": MAX_MESSAGE_BYTES,
            "transactional_id": transactional_id,
        }
        return _layer(self.aio_connection_config(), tuning, overrides)

    def aio_producer(self, *, transactional_id: str | None = None, **overrides: Any) -> AIOKafkaProducer:
        """Same guarantees as ``producer`` for asyncio code (the gateway). Create it inside the running loop
        and ``await producer.start()``; ``send_and_wait`` raises on a failed delivery."""
        return _aiokafka("AIOKafkaProducer")(
            **self.aio_producer_config(transactional_id=transactional_id, **overrides)
        )

    def aio_consumer_config(
        self, *, group_id: str | None, isolation_level: str = "read_committed", **overrides: Any
    ) -> dict[str, Any]:
        tuning: dict[str, Any] = {
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": isolation_level,
            "partition_assignment_strategy": (_aiokafka("RangePartitionAssignor"),),
            "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,
        }
        return _layer(self.aio_connection_config(), tuning, overrides)

    def aio_consumer(
        self,
        *topics: str,
        group_id: str | None,
        isolation_level: str = "read_committed",
        **overrides: Any,
    ) -> AIOKafkaConsumer:
        """Same defaults as ``consumer``; ``group_id=None`` gives a group-less reader (the gateway's views,
        the monitor's end offsets)."""
        config = self.aio_consumer_config(group_id=group_id, isolation_level=isolation_level, **overrides)
        return _aiokafka("AIOKafkaConsumer")(*topics, **config)

    def aio_admin_config(self, **overrides: Any) -> dict[str, Any]:
        return _layer(self.aio_connection_config(), {}, overrides)

    def aio_admin(self, **overrides: Any) -> AIOKafkaAdminClient:
        """Create inside the running loop and ``await admin.start()``."""
        return _aiokafka("AIOKafkaAdminClient")(**self.aio_admin_config(**overrides))

    # ------------------------------------------------------------------------------------------ faust
    def faust_broker(self) -> dict[str, Any]:
        """``faust.App`` keyword arguments: the broker URLs and, with security, ``broker_credentials``."""
        import faust  # only the monitor runs faust; the other services never pay for its import

        settings = self.settings
        conf: dict[str, Any] = {
            "broker": [f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")]
        }
        context = settings.ssl_context()
        if settings.uses_sasl:
            password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
            conf["broker_credentials"] = faust.SASLCredentials(
                username=settings.sasl_username,
                password=password,
                mechanism=settings.sasl_mechanism,
                ssl_context=context,
            )
        elif context is not None:
            conf["broker_credentials"] = faust.SSLCredentials(context)
        return conf


# ------------------------------------------------------------------- the same factories, as functions
def make_producer(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> Producer:
    """An idempotent producer; transactional when ``transactional_id`` is given."""
    clients = KafkaClients(settings)
    if transactional_id is None:
        return clients.producer(**overrides)
    return clients.transactional_producer(transactional_id, **overrides)


def make_consumer(
    settings: KafkaSettings,
    group_id: str,
    *,
    isolation_level: str = "read_committed",
    partition_eof: bool = False,
    **overrides: Any,
) -> Consumer:
    return KafkaClients(settings).consumer(
        group_id, isolation_level=isolation_level, partition_eof=partition_eof, **overrides
    )


def make_aio_producer(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    return KafkaClients(settings).aio_producer(transactional_id=transactional_id, **overrides)


def make_aio_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    isolation_level: str = "read_committed",
    **overrides: Any,
) -> AIOKafkaConsumer:
    return KafkaClients(settings).aio_consumer(
        *topics, group_id=group_id, isolation_level=isolation_level, **overrides
    )
