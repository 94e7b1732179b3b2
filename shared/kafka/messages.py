"""Consumed Kafka records behind a Protocol, and the polling rule every consume path shares.

The loops are written against ``KafkaMessage`` rather than ``confluent_kafka.Message`` (which cannot be
constructed outside librdkafka), so their logic can be unit-tested with plain fakes as well as run
against the real broker.
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import KafkaError

from shared.allocation import gc_paused
from shared.kafka.types import Headers, KafkaConsumer

TP = tuple[str, int]


class KafkaMessage(Protocol):
    """The calls the loops make on a consumed record (a subset of ``confluent_kafka.Message``)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def error(self) -> KafkaError | None: ...

    def timestamp(self) -> tuple[int, int]: ...

    def headers(self) -> Any: ...

    def leader_epoch(self) -> int | None: ...


def coordinates(message: KafkaMessage) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None, "consumed records have these"
    return topic, partition, offset


def timestamp_ms(message: KafkaMessage) -> int | None:
    kind, value = message.timestamp()
    return value if kind != 0 else None  # 0 = TIMESTAMP_NOT_AVAILABLE


def headers_of(message: KafkaMessage) -> Headers:
    headers = message.headers()
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def first_offsets(messages: list[Any]) -> dict[TP, int]:
    """Per partition, the offset of its first message in ``messages``."""
    first: dict[TP, int] = {}
    for message in messages:
        topic, partition, offset = coordinates(message)
        first.setdefault((topic, partition), offset)
    return first


def topic_not_there_yet(error: object) -> bool:
    """Whether a consume error only says a subscribed topic, or a pattern such as the tenants' request
    topics, matches no topic yet. librdkafka reports that once per change (``Subscribed topic not
    available: ... Unknown topic or partition``), keeps serving the other topics and subscribes the topic
    at the metadata refresh that finds it: a notice, not a failure to back off from."""
    return isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def consume_available(consumer: KafkaConsumer, max_messages: int, timeout: float) -> list[Any]:
    """Wait up to ``timeout`` for the first message, then take only what is already fetched.

    ``Consumer.consume(n, timeout)`` waits until it has *n* messages or the timeout passed, so a lone
    message would sit for the whole poll timeout at every hop (measured: ~0.5 s per hop end to end)."""
    first = consumer.consume(1, timeout)
    if not first or max_messages == 1:
        return list(first)
    with gc_paused():  # thousands of message objects at once, no cycles among them (shared.allocation)
        return [*first, *consumer.consume(max_messages - 1, 0)]
