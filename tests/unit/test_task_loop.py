"""The task loop (``shared.processing.loop``) with fake clients behind the client Protocols
(``tests.unit.kafka_fakes``) and the real transaction engine.

Fences: the batch is taken back, the consumer rewound to the committed offsets, a new producer redoes the
batch, and nothing is dead-lettered, however far into the batch the fence struck; only fences that recur
stop the loop.

The transaction budget (``shared.processing.budget``): small messages of a poll share one transaction, a
message that spends the budget closes it, a retry's partition stays held back across the poll's later
transactions, a failed commit rewinds only what was not committed, and the rest of an expired poll goes
back to the consumer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError

import shared.kafka.transaction as transaction_module
from shared.avro.serde import AvroSerde
from shared.contracts import EventKind, RunEvent, Stage
from shared.errors import TransientError
from shared.kafka.transaction import ProducerFencedError
from shared.processing import MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.processing.budget import TransactionBudget
from shared.settings import KafkaSettings
from tests.unit.kafka_fakes import (
    FakeConsumer,
    FakeProducer,
    FakeRecord,
    fake_loop,
    kafka_failure,
    run_polls,
)

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
    loop: ProcessingLoop = fake_loop(
        monkeypatch, consumer, two_outputs, retry=RetryPolicy(initial_delay=0.0, max_delay=0.0)
    )
    return loop


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


# ------------------------------------------------------------------------------ the transaction budget
NO_LIMIT = TransactionBudget(max_bytes=10**9, max_seconds=3600.0, poll_seconds=3600.0)


def partition_records(*offsets: int, partition: int = 0) -> list[FakeRecord]:
    return [FakeRecord(o, SERDE.encode(event(f"p{partition}-{o}")), partition=partition) for o in offsets]


def copy(value: Any, context: MessageContext) -> Iterator[Output]:
    yield Output("out", value.run_id, value)


def loop_with(
    monkeypatch: pytest.MonkeyPatch,
    consumer: FakeConsumer,
    budget: TransactionBudget,
    handler: Any = copy,
    retry_delay: float = 5.0,
) -> ProcessingLoop:
    retry = RetryPolicy(initial_delay=retry_delay, max_delay=retry_delay)
    loop: ProcessingLoop = fake_loop(monkeypatch, consumer, handler, budget=budget, retry=retry)
    return loop


def transactions(producer: FakeProducer) -> list[list[tuple[str, int, int]]]:
    """The offsets each committed transaction held."""
    return producer.offsets_sent


def test_small_messages_of_one_poll_share_one_transaction(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = FakeConsumer()
    poll = partition_records(0, 1, 2) + partition_records(0, 1, partition=1)
    run_polls(loop_with(monkeypatch, consumer, NO_LIMIT), consumer, [poll])
    producer = factory.made[0]
    assert producer.calls.count("commit") == 1
    assert sorted(transactions(producer)[0]) == [("in", 0, 3), ("in", 1, 2)]
    assert len(producer.produced) == 5


def test_a_message_that_spends_the_byte_budget_commits_its_transaction(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(SERDE.encode(event("p0-0")))
    # two outputs reach the budget: transactions of two messages, the last one alone
    budget = TransactionBudget(max_bytes=2 * size, max_seconds=3600.0, poll_seconds=3600.0)
    consumer = FakeConsumer()
    run_polls(loop_with(monkeypatch, consumer, budget), consumer, [partition_records(0, 1, 2, 3, 4)])
    assert transactions(factory.made[0]) == [[("in", 0, 2)], [("in", 0, 4)], [("in", 0, 5)]]
    assert consumer.seeks == [], "nothing was given back: the whole poll was processed"


def test_a_time_budget_of_zero_gives_each_message_its_own_transaction(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=3600.0)
    consumer = FakeConsumer()
    run_polls(loop_with(monkeypatch, consumer, budget), consumer, [partition_records(7, 8, 9)])
    assert transactions(factory.made[0]) == [[("in", 0, 8)], [("in", 0, 9)], [("in", 0, 10)]]


def test_a_retried_partition_stays_held_back_in_the_polls_later_transactions(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flaky(value: Any, context: MessageContext) -> Iterator[Output]:
        if value.run_id == "p0-1":
            raise TransientError("not yet")
        yield Output("out", value.run_id, value)

    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=3600.0)
    consumer = FakeConsumer()
    poll = [*partition_records(0, 1, 2, 3), *partition_records(0, 1, partition=1)]
    run_polls(loop_with(monkeypatch, consumer, budget, flaky), consumer, [poll])
    committed = [tp for txn in transactions(factory.made[0]) for tp in txn]
    assert ("in", 0, 1) in committed and ("in", 1, 2) in committed
    assert not any(t == "in" and p == 0 and o > 1 for t, p, o in committed), "p0@1 and later wait"
    assert consumer.seeks == [("in", 0, 1)], "rewound to the failed message once"
    assert ("in", 0) in consumer.paused
    assert [k for _, k, _ in factory.made[0].produced] == ["p0-0", "p1-0", "p1-1"]


def test_a_failed_commit_rewinds_only_what_was_not_committed(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=3600.0)
    consumer = FakeConsumer(committed={("in", 0): 0})
    # the first transaction commits, the second's commit times out (then abort succeeds)
    factory.plans = [{"commit": [None, kafka_failure()]}]
    run_polls(
        loop_with(monkeypatch, consumer, budget, retry_delay=0.0), consumer, [partition_records(0, 1, 2)]
    )
    assert transactions(factory.made[0])[0] == [("in", 0, 1)]
    # rewound to the committed offset (the fake's committed offsets stay at 0: what the broker says)
    assert consumer.seeks == [("in", 0, 0)]
    assert factory.made[0].calls.count("commit") == 2, "the third message waits for the next poll"


def test_the_rest_of_an_expired_poll_goes_back_to_the_consumer(
    factory: ProducerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=0.0)
    consumer = FakeConsumer()
    poll = [*partition_records(5, 6, 7), *partition_records(3, partition=1)]
    run_polls(loop_with(monkeypatch, consumer, budget), consumer, [poll])
    assert transactions(factory.made[0]) == [[("in", 0, 6)]]
    assert sorted(consumer.seeks) == [("in", 0, 6), ("in", 1, 3)], "each partition from its first unprocessed"
