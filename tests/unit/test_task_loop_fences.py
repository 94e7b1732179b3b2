"""The task loop (``shared.processing.loop``) when its producer is fenced: the batch is taken back, the
consumer rewound to the committed offsets, a new producer redoes the batch, and nothing is dead-lettered,
however far into the batch the fence struck; only fences that recur stop the loop. Fake clients behind
the client Protocols (``tests.unit.kafka_fakes``), the real transaction engine."""

from __future__ import annotations

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
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, FakeRecord, kafka_failure, run_polls

pytestmark = pytest.mark.unit

SERDE = AvroSerde()
FENCED = KafkaError._FENCED


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


def records(*offsets: int) -> list[FakeRecord]:
    return [FakeRecord(o, SERDE.encode(event(f"r{o}"))) for o in offsets]


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
    run_polls(loop, consumer, [records(10, 11), records(10, 11)])
    assert consumer.seeks == [("in", 0, 10)], "rewound to the committed offset"
    assert len(factory.made) == 2, "one new producer"
    redone = factory.made[1]
    assert [t for t, _, _ in redone.produced] == ["out"] * 4, "the fence is no fault of the message"
    assert redone.calls == ["init", "begin", *["produce"] * 4, "send_offsets", "commit"]


def test_fences_that_recur_stop_the_loop(factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    factory.plans = [{"commit": [kafka_failure(FENCED, fatal=True)]} for _ in range(3)]
    consumer = FakeConsumer()
    with pytest.raises(ProducerFencedError):
        run_polls(loop_on(consumer, monkeypatch), consumer, [records(0)] * 4)
    assert len(factory.made) == 3, "the first two fences replaced the producer, the third stopped"
