"""The task loop (``shared.processing.loop``) when its producer is fenced: the batch is taken back, the
consumer rewound to the committed offsets, a new producer redoes the batch, and nothing is dead-lettered,
however far into the batch the fence struck; only fences that recur stop the loop. Fake clients behind
the client Protocols (``tests.unit.kafka_fakes``), the real transaction engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError

import shared.kafka.transaction as transaction_module
import shared.processing.loop as loop_module
from shared.avro.serde import AvroSerde
from shared.contracts import EventKind, RunEvent, Stage
from shared.kafka.transaction import ProducerFencedError
from shared.processing import LoopConfig, MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.settings import KafkaSettings
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, kafka_failure

pytestmark = pytest.mark.unit

SERDE = AvroSerde()
FENCED = KafkaError._FENCED


class Record:
    def __init__(self, offset: int, value: bytes):
        self._offset, self._value = offset, value

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)

    def headers(self) -> None:
        return None

    def leader_epoch(self) -> int:
        return 3


def event(run_id: str) -> RunEvent:
    return RunEvent(run_id=run_id, kind=EventKind.RUN_FINISHED, stage=Stage.TRANSFORM)


def two_outputs(value: Any, context: MessageContext) -> Iterator[Output]:
    """A handler streaming two outputs per message (the fence can strike between them)."""
    yield Output("out", value.run_id, event(value.run_id + "-a"))
    yield Output("out", value.run_id, event(value.run_id + "-b"))


class ProducerFactory:
    """The transaction engine's producers: each a ``FakeProducer``, armed with the next ``plans`` entry."""

    def __init__(self) -> None:
        self.made: list[FakeProducer] = []
        self.plans: list[dict[str, list[BaseException | None]]] = []

    def __call__(self, settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        producer = FakeProducer()
        producer.failures = self.plans.pop(0) if self.plans else {}
        self.made.append(producer)
        return producer


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch) -> ProducerFactory:
    made = ProducerFactory()
    monkeypatch.setattr(transaction_module, "make_producer", made)
    return made


def loop_on(consumer: FakeConsumer, monkeypatch: pytest.MonkeyPatch) -> ProcessingLoop:
    monkeypatch.setattr(loop_module, "make_consumer", lambda *a, **kw: consumer)
    config = LoopConfig(
        "transform",
        Stage.TRANSFORM,
        "transform-0",
        "g",
        {"in": RunEvent},
        kafka_timeout=0.05,
        retry=RetryPolicy(initial_delay=0.0, max_delay=0.0),
    )
    return ProcessingLoop(KafkaSettings(bootstrap_servers="unused:9092"), config, two_outputs, SERDE)


def run_batches(loop: ProcessingLoop, consumer: FakeConsumer, batches: list[list[Record]]) -> None:
    """Run the loop on one consumer poll per entry of ``batches`` (the records fetched by then); it stops
    at the next poll."""
    stop = threading.Event()
    real_consume, pending = consumer.consume, list(batches)

    def consume(num_messages: int = 1, timeout: float = -1) -> list[Any]:
        if num_messages == 1:  # the first call of a poll (``consume_available``)
            if not pending:
                stop.set()
                return []
            consumer.messages = pending.pop(0)
        return real_consume(num_messages, timeout)

    consumer.consume = consume  # type: ignore[method-assign]
    loop.run(stop)


def records(*offsets: int) -> list[Record]:
    return [Record(o, SERDE.encode(event(f"r{o}"))) for o in offsets]


def test_a_fence_after_the_first_output_takes_the_batch_back_and_a_new_producer_redoes_it(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fence strikes the second produce of the batch's first message (a fatal librdkafka producer
    # fails every call after it), so the first output is already in the transaction.
    fatal, fenced = kafka_failure(KafkaError._FATAL), kafka_failure(FENCED, fatal=True)
    factory.plans = [{"produce": [None, fatal], "abort": [fenced]}]
    consumer = FakeConsumer(committed={("in", 0): 10})
    loop = loop_on(consumer, monkeypatch)
    # the second poll: the batch again, from the committed offset the consumer was rewound to
    run_batches(loop, consumer, [records(10, 11), records(10, 11)])
    assert consumer.seeks == [("in", 0, 10)], "rewound to the committed offset"
    assert len(factory.made) == 2, "one new producer"
    redone = factory.made[1]
    assert [t for t, _, _ in redone.produced] == ["out"] * 4, "the fence is no fault of the message"
    assert redone.calls == ["init", "begin", *["produce"] * 4, "send_offsets", "commit"]


def test_fences_that_recur_stop_the_loop(factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    factory.plans = [{"commit": [kafka_failure(FENCED, fatal=True)]} for _ in range(3)]
    consumer = FakeConsumer()
    with pytest.raises(ProducerFencedError):
        run_batches(loop_on(consumer, monkeypatch), consumer, [records(0)] * 4)
    assert len(factory.made) == 3, "the first two fences replaced the producer, the third stopped"
