"""Kafka client factories with safe defaults, and delivery checking.

Defaults, and why:

* producers are idempotent with ``acks=all``: a retried send never duplicates or reorders a record, and a
  record counts as sent only once every in-sync replica has it;
* a delivery failure is never silent: ``DeliveryReports`` collects each report and ``flush_checked`` /
  ``produce_sync`` raise ``KafkaDeliveryError`` (transient) when one failed or did not arrive in time;
* consumers never auto-commit (the runtime commits offsets inside a transaction, or after the effect),
  start at the earliest offset when the group is new (nothing published before a first deployment is
  skipped), read only committed transactional data, and use the *range* assignor, which gives one member
  the same partition numbers of every subscribed topic, so co-partitioned topics (requests and events,
  both keyed by run id) are processed together;
* message size limits match the 16 MiB ``max.message.bytes`` of the data topics.

Every keyword override is passed through verbatim (librdkafka's dotted names, so ``**{"linger.ms": 50}``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from confluent_kafka import Consumer, KafkaError, Message, Producer

from shared.errors import TransientError
from shared.kafka.types import Headers, KafkaProducer
from shared.settings import KafkaSettings

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000

_log = logging.getLogger("aoetl.kafka")


class KafkaDeliveryError(TransientError):
    """A produced record was not acknowledged (broker error, or no report before the timeout)."""


def _log_client_error(error: KafkaError) -> None:
    # librdkafka reports cluster-wide trouble (all brokers down...) here; it keeps retrying by itself.
    level = logging.ERROR if error.fatal() else logging.WARNING
    _log.log(level, "kafka client error: %s", error)


def _common(settings: KafkaSettings) -> dict[str, Any]:
    return {**settings.to_confluent(), "logger": _log, "error_cb": _log_client_error}


def producer_config(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        **_common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": MAX_MESSAGE_BYTES,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = DEFAULT_TRANSACTION_TIMEOUT_MS
    config.update(overrides)
    return config


def consumer_config(
    settings: KafkaSettings, group_id: str, *, isolation_level: str = "read_committed", **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        **_common(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation_level,
        "partition.assignment.strategy": "range",
        "max.partition.fetch.bytes": MAX_MESSAGE_BYTES,
    }
    config.update(overrides)
    return config


def make_producer(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> Producer:
    """An idempotent producer; transactional when ``transactional_id`` is given (call
    ``init_transactions`` before the first ``begin_transaction``)."""
    return Producer(producer_config(settings, transactional_id=transactional_id, **overrides))


def make_consumer(
    settings: KafkaSettings,
    group_id: str,
    *,
    isolation_level: str = "read_committed",
    partition_eof: bool = False,
    **overrides: Any,
) -> Consumer:
    """``partition_eof``: deliver an end-of-partition event, for readers that read "up to now"."""
    if partition_eof:
        overrides["enable.partition.eof"] = True
    return Consumer(consumer_config(settings, group_id, isolation_level=isolation_level, **overrides))


class DeliveryReports:
    """A delivery callback that remembers failures; pass it as ``on_delivery`` to every ``produce``."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failures: list[tuple[str | None, KafkaError]] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failures.append((message.topic(), error))

    def raise_if_failed(self) -> None:
        if self.failures:
            topic, error = self.failures[0]
            raise KafkaDeliveryError(
                f"{len(self.failures)} record(s) not delivered; first to {topic}: {error.str()}"
            )


def flush_checked(producer: KafkaProducer, reports: DeliveryReports, timeout: float = 30.0) -> None:
    """Wait for every queued record; raise ``KafkaDeliveryError`` if one failed or is still pending."""
    remaining = producer.flush(timeout)
    reports.raise_if_failed()
    if remaining:
        raise KafkaDeliveryError(f"{remaining} record(s) still undelivered after {timeout}s")


def produce_sync(
    producer: KafkaProducer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    *,
    headers: Headers | None = None,
    timeout: float = 30.0,
) -> None:
    """Produce one record and wait for its acknowledgement (for rare control messages, not data)."""
    reports = DeliveryReports()
    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=reports)
    flush_checked(producer, reports, timeout)


# ----------------------------------------------------------------------------------------- aiokafka
def make_aio_producer(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """Same guarantees as ``make_producer`` for asyncio code (the gateway). Create it inside the running
    loop and ``await producer.start()``; ``send_and_wait`` raises on a failed delivery."""
    config: dict[str, Any] = {
        **settings.to_aiokafka(),
        "enable_idempotence": True,
        "acks": "all",
        "max_request_size": MAX_MESSAGE_BYTES,
        "transactional_id": transactional_id,
    }
    config.update(overrides)
    return AIOKafkaProducer(**config)


def make_aio_consumer(
    settings: KafkaSettings,
    *topics: str,
    group_id: str | None,
    isolation_level: str = "read_committed",
    **overrides: Any,
) -> AIOKafkaConsumer:
    """Same defaults as ``make_consumer``; ``group_id=None`` gives a group-less reader (e.g. the gateway
    waiting for one result)."""
    config: dict[str, Any] = {
        **settings.to_aiokafka(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": isolation_level,
        "partition_assignment_strategy": (RangePartitionAssignor,),
        "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,
    }
    config.update(overrides)
    return AIOKafkaConsumer(*topics, **config)
