"""Delivery checking for confluent-kafka producers: a delivery failure is never silent.

``DeliveryReports`` collects each delivery report; ``flush_checked`` / ``produce_sync`` raise
``KafkaDeliveryError`` (transient) when a record failed or no report arrived in time. (Split from
``shared.kafka.clients``, which builds the clients and re-exports these names.)
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from shared.errors import TransientError
from shared.kafka.types import Headers, KafkaProducer


class KafkaDeliveryError(TransientError):
    """A produced record was not acknowledged (broker error, or no report before the timeout)."""


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
