"""How the task loop makes a polled batch's effects and its consumed offsets stick: one small strategy per
mode, so the loop itself has no ``if transactional`` branches.

* ``TransactionalCommit`` (every stage whose outputs go to Kafka): outputs, dead letters and the offsets
  in one Kafka transaction (``shared.kafka.transaction``), so a crash leaves all of a batch or none.
  Outputs may be produced as a handler yields them: a failure takes them back.
* ``SinkFirstCommit`` (the load stage, whose effect is outside Kafka: "database first, offsets after"):
  the handler applies its effect idempotently; the outputs it returns are then produced, flushed and
  checked, and only then are the offsets committed synchronously. Nothing produced can be taken back,
  so a handler's outputs are collected before the first is produced; a crash in between repeats
  idempotent work, which the sink's ledger turns into a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from shared.kafka.clients import DeliveryReports, flush_checked, make_producer
from shared.kafka.transaction import KafkaCommitError, KafkaTransaction, transactional_id
from shared.kafka.types import Headers, KafkaConsumer, KafkaProducer
from shared.processing.messages import LoopConfig
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)


class CommitMode(Protocol):
    # Outputs may be produced while the handler still runs (a failure can take them back).
    streams_outputs: bool
    # A failed batch's outputs were taken back, so a stateful handler must rebuild its state.
    rolls_back: bool
    description: str

    @property
    def ready(self) -> bool: ...

    def open(self, consumer: KafkaConsumer) -> None: ...

    def begin(self) -> None: ...

    def produce(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None,
        reports: DeliveryReports,
        headers: Headers | None = None,
    ) -> None: ...

    def commit(self, offsets: Sequence[TopicPartition], reports: DeliveryReports) -> None: ...

    def fail(self, exc: BaseException) -> None:
        """The commit failed with ``exc``: end what is open (the caller rewinds afterwards)."""

    def discard(self) -> None:
        """Nothing of the batch will be committed (it failed mid-way, or holds nothing)."""

    def abort_quietly(self) -> None: ...

    def close(self) -> None: ...


class TransactionalCommit:
    streams_outputs = True
    rolls_back = True

    def __init__(
        self,
        kafka: KafkaSettings,
        transactional_id: str,
        *,
        stop: threading.Event,
        timeout: float,
        retry_delay: Any,
        producer_overrides: Mapping[str, Any],
    ):
        self.description = f"transactional id {transactional_id}"
        self.transaction = KafkaTransaction(
            kafka,
            transactional_id,
            stop=stop,
            timeout=timeout,
            retry_delay=retry_delay,
            producer_overrides=producer_overrides,
        )
        self._consumer: KafkaConsumer | None = None

    @property
    def ready(self) -> bool:
        return self.transaction.ready

    def open(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self.transaction.open()

    def begin(self) -> None:
        self.transaction.begin()

    def produce(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None,
        reports: DeliveryReports,
        headers: Headers | None = None,
    ) -> None:
        self.transaction.produce(topic, value, key, reports, headers)

    def commit(self, offsets: Sequence[TopicPartition], reports: DeliveryReports) -> None:
        self.transaction.commit(offsets, self._consumer)

    def fail(self, exc: BaseException) -> None:
        self.transaction.fail(exc)

    def discard(self) -> None:
        self.transaction.discard()

    def abort_quietly(self) -> None:
        self.transaction.abort_quietly()

    def close(self) -> None:
        self.transaction.close()


class SinkFirstCommit:
    streams_outputs = False
    rolls_back = False
    description = "at-least-once, effects first"

    def __init__(self, kafka: KafkaSettings, *, timeout: float, producer_overrides: Mapping[str, Any]):
        self._kafka, self._timeout, self._overrides = kafka, timeout, dict(producer_overrides)
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None

    @property
    def ready(self) -> bool:
        return self._producer is not None

    def open(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self._producer = make_producer(self._kafka, **self._overrides)

    def begin(self) -> None:
        """Nothing to open: each output is produced as is."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None,
        reports: DeliveryReports,
        headers: Headers | None = None,
    ) -> None:
        assert self._producer is not None, "open() creates the producer"
        self._producer.produce(topic, value=value, key=key, on_delivery=reports, headers=headers or None)

    def commit(self, offsets: Sequence[TopicPartition], reports: DeliveryReports) -> None:
        assert self._producer is not None and self._consumer is not None, "open() first"
        flush_checked(self._producer, reports, self._timeout)
        if not offsets:
            return
        result = self._consumer.commit(offsets=list(offsets), asynchronous=False)
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise KafkaCommitError(f"offset commit failed: {failed[0].error}")

    def fail(self, exc: BaseException) -> None:
        """What was produced stays produced; the rewind repeats the idempotent effects."""

    def discard(self) -> None:
        """Nothing is open."""

    def abort_quietly(self) -> None:
        """Nothing is open."""

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None


def commit_mode_for(kafka: KafkaSettings, config: LoopConfig, stop: threading.Event) -> CommitMode:
    """The loop's one decision about its mode, taken once."""
    if not config.transactional:
        return SinkFirstCommit(
            kafka, timeout=config.kafka_timeout, producer_overrides=config.producer_overrides
        )
    return TransactionalCommit(
        kafka,
        transactional_id(config.service, config.instance_id, suffix=config.topic_suffix),
        stop=stop,
        timeout=config.kafka_timeout,
        retry_delay=config.retry.delay,
        producer_overrides=config.producer_overrides,
    )
