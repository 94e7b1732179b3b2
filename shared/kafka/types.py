"""Structural types for the Kafka client objects and the serde that the runtime uses.

Services and the runtime are written against these narrow protocols rather than the concrete
confluent-kafka classes, so mypy checks exactly the calls we rely on and the factories in
``clients.py`` are the only place that names a concrete client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

from confluent_kafka import Message, TopicPartition

from shared.contracts import Contract

C = TypeVar("C", bound=Contract)

Headers = list[tuple[str, str | bytes | None]]
DeliveryCallback = Callable[[Any, Message], None]
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class Serde(Protocol):
    """What ``shared.avro.AvroSerde`` offers: contracts to bytes and back, typed errors on failure."""

    def encode(self, model: Contract) -> bytes: ...

    def decode(self, data: bytes, model_type: type[C]) -> C: ...

    def decode_record(self, data: bytes, reader_name: str | None = None) -> dict[str, Any]: ...


class KafkaProducer(Protocol):
    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...


class TransactionalProducer(KafkaProducer, Protocol):
    def init_transactions(self, timeout: float = -1) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None: ...

    def commit_transaction(self, timeout: float = -1) -> None: ...

    def abort_transaction(self, timeout: float = -1) -> None: ...


class KafkaConsumer(Protocol):
    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]: ...

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...

    def consumer_group_metadata(self) -> Any: ...

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def close(self) -> None: ...
