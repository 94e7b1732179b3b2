"""What a service's handler sees and returns in the task loop, and how the loop is configured."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import TopicPartition

from shared.contracts import Contract, Origin, Stage
from shared.errors import DataError
from shared.kafka.clients import MAX_MESSAGE_BYTES
from shared.kafka.topics import Topics
from shared.kafka.types import Headers, Serde
from shared.processing.budget import TransactionBudget
from shared.processing.retries import RetryPolicy


class Output(NamedTuple):
    """One record a handler wants produced: ``Output(Topics.EVENTS, run_id, RunEvent(...))``."""

    topic: str
    key: str | bytes | None
    value: Contract
    # The trace context this record carries (``shared.tracing``); None: the handling span's, which is
    # what nearly every output wants. A handler that makes a span per output (extract's batches) sets it.
    headers: Headers | None = None


@dataclass(frozen=True)
class MessageContext:
    """Where the message being handled came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int | None
    headers: Headers
    attempt: int = 0  # how many times handling this very message failed transiently before

    def origin(self) -> Origin:
        """Where this message was read, as a dead letter or a failure event names it."""
        return Origin(topic=self.topic, partition=self.partition, offset=self.offset, key=self.key)


Handler = Callable[[Contract, MessageContext], Iterable[Output]]
# Called when a message is dead-lettered (terminal error, retries exhausted, undecodable): its outputs are
# produced in the same transaction as the dead letter, e.g. an event that tells the orchestrator.
FailureHandler = Callable[[Contract | None, BaseException, MessageContext, bytes], Sequence[Output]]
# Called every ``tick_interval`` seconds on the loop thread; its outputs get a transaction of their own.
TickHandler = Callable[[], Sequence[Output]]
AssignHandler = Callable[[Any, list[TopicPartition]], None]
# Called (with the consumer) after a transaction that held outputs was aborted and the consumer rewound to
# the committed offsets: state a handler derived from the messages of that batch (or a tick) went back
# with it, so a stateful service rebuilds its state from what is committed, as after an assignment.
RollbackHandler = Callable[[Any], None]


@dataclass(frozen=True)
class LoopConfig:
    service: str  # names the transactional id and the log records
    stage: Stage  # written into dead letters
    instance_id: str
    group_id: str
    # input topic -> the contract its messages carry; a key starting with "^" is a regular expression
    # (librdkafka's pattern subscription: every matching topic, the ones created later included)
    input_types: Mapping[str, type[Contract]]
    dead_letter_topic: str = Topics.DEAD_LETTERS
    topic_suffix: str = ""  # the deployment's: part of the transactional id (shared.kafka.transaction)
    transactional: bool = True  # False: effects first, offsets after (see shared.processing.commit)
    max_batch: int = 100  # messages per poll; how many share a transaction is the budget's call
    budget: TransactionBudget = field(default_factory=TransactionBudget)
    poll_timeout: float = 1.0
    kafka_timeout: float = 30.0  # for init/commit/abort/committed calls
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    producer_overrides: Mapping[str, Any] = field(default_factory=dict)

    def contract_of(self, topic: str) -> type[Contract]:
        """The contract of a message from ``topic``: its own entry, or that of the pattern it matches."""
        found = self.input_types.get(topic)
        if found is not None:
            return found
        for pattern, contract in self.input_types.items():
            if pattern.startswith("^") and re.match(pattern, topic):
                return contract
        raise KeyError(f"{topic} is not an input of {self.service}")


class OutputTooLargeError(DataError):
    """A handler output is larger than a Kafka record may be; split the batch smaller."""


def encode_checked(serde: Serde, value: Contract) -> bytes:
    data = serde.encode(value)
    if len(data) > MAX_MESSAGE_BYTES:
        # Caught here, inside the handler's error policy: at produce() time it would fail the batch.
        raise OutputTooLargeError(f"{type(value).__name__} of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data
