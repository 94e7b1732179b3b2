"""How the task loop (``shared.processing.loop``) splits one poll into transactions by its budget
(``shared.processing.budget``): small messages share one, a message that spends the budget closes it, a
retry's partition stays held back across the poll's later transactions, a failed commit rewinds only
what was not committed, and the rest of an expired poll goes back to the consumer. Fake clients behind
the client Protocols (``tests.unit.kafka_fakes``), the real transaction engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import shared.kafka.transaction as transaction_module
import shared.processing.loop as loop_module
from shared.avro.serde import AvroSerde
from shared.contracts import EventKind, RunEvent, Stage
from shared.errors import TransientError
from shared.processing import LoopConfig, MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.processing.budget import TransactionBudget
from shared.settings import KafkaSettings
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, FakeRecord, kafka_failure, run_polls

pytestmark = pytest.mark.unit

SERDE = AvroSerde()
NO_LIMIT = TransactionBudget(max_bytes=10**9, max_seconds=3600.0, poll_seconds=3600.0)


def event(run_id: str) -> RunEvent:
    return RunEvent(run_id=run_id, kind=EventKind.RUN_FINISHED, stage=Stage.TRANSFORM)


def records(*offsets: int, partition: int = 0) -> list[FakeRecord]:
    return [FakeRecord(o, SERDE.encode(event(f"p{partition}-{o}")), partition=partition) for o in offsets]


class Producers:
    def __init__(self, plans: list[dict[str, list[BaseException | None]]] | None = None) -> None:
        self.made: list[FakeProducer] = []
        self.plans = plans or []

    def __call__(self, settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        producer = FakeProducer()
        producer.failures = self.plans.pop(0) if self.plans else {}
        self.made.append(producer)
        return producer


def copy(value: Any, context: MessageContext) -> Iterator[Output]:
    yield Output("out", value.run_id, value)


def loop_with(
    monkeypatch: pytest.MonkeyPatch,
    consumer: FakeConsumer,
    producers: Producers,
    budget: TransactionBudget,
    handler: Any = copy,
    retry_delay: float = 5.0,
) -> ProcessingLoop:
    monkeypatch.setattr(loop_module, "make_consumer", lambda *a, **kw: consumer)
    monkeypatch.setattr(transaction_module, "make_producer", producers)
    config = LoopConfig(
        "transform",
        Stage.TRANSFORM,
        "transform-0",
        "g",
        {"in": RunEvent},
        budget=budget,
        kafka_timeout=0.05,
        retry=RetryPolicy(initial_delay=retry_delay, max_delay=retry_delay),
    )
    return ProcessingLoop(KafkaSettings(bootstrap_servers="unused:9092"), config, handler, SERDE)


def transactions(producer: FakeProducer) -> list[list[tuple[str, int, int]]]:
    """The offsets each committed transaction held."""
    return producer.offsets_sent


def test_small_messages_of_one_poll_share_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, producers = FakeConsumer(), Producers()
    poll = records(0, 1, 2) + records(0, 1, partition=1)
    run_polls(loop_with(monkeypatch, consumer, producers, NO_LIMIT), consumer, [poll])
    producer = producers.made[0]
    assert producer.calls.count("commit") == 1
    assert sorted(transactions(producer)[0]) == [("in", 0, 3), ("in", 1, 2)]
    assert len(producer.produced) == 5


def test_a_message_that_spends_the_byte_budget_commits_its_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = len(SERDE.encode(event("p0-0")))
    # two outputs reach the budget: transactions of two messages, the last one alone
    budget = TransactionBudget(max_bytes=2 * size, max_seconds=3600.0, poll_seconds=3600.0)
    consumer, producers = FakeConsumer(), Producers()
    run_polls(loop_with(monkeypatch, consumer, producers, budget), consumer, [records(0, 1, 2, 3, 4)])
    assert transactions(producers.made[0]) == [[("in", 0, 2)], [("in", 0, 4)], [("in", 0, 5)]]
    assert consumer.seeks == [], "nothing was given back: the whole poll was processed"


def test_a_time_budget_of_zero_gives_each_message_its_own_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=3600.0)
    consumer, producers = FakeConsumer(), Producers()
    run_polls(loop_with(monkeypatch, consumer, producers, budget), consumer, [records(7, 8, 9)])
    assert transactions(producers.made[0]) == [[("in", 0, 8)], [("in", 0, 9)], [("in", 0, 10)]]


def test_a_retried_partition_stays_held_back_in_the_polls_later_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def flaky(value: Any, context: MessageContext) -> Iterator[Output]:
        if value.run_id == "p0-1":
            raise TransientError("not yet")
        yield Output("out", value.run_id, value)

    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=3600.0)
    consumer, producers = FakeConsumer(), Producers()
    poll = [*records(0, 1, 2, 3), *records(0, 1, partition=1)]
    run_polls(loop_with(monkeypatch, consumer, producers, budget, flaky), consumer, [poll])
    committed = [tp for txn in transactions(producers.made[0]) for tp in txn]
    assert ("in", 0, 1) in committed and ("in", 1, 2) in committed
    assert not any(t == "in" and p == 0 and o > 1 for t, p, o in committed), "p0@1 and later wait"
    assert consumer.seeks == [("in", 0, 1)], "rewound to the failed message once"
    assert ("in", 0) in consumer.paused
    assert [k for _, k, _ in producers.made[0].produced] == ["p0-0", "p1-0", "p1-1"]


def test_a_failed_commit_rewinds_only_what_was_not_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=3600.0)
    consumer = FakeConsumer(committed={("in", 0): 0})
    # the first transaction commits, the second's commit times out (then abort succeeds)
    producers = Producers([{"commit": [None, kafka_failure()]}])
    run_polls(
        loop_with(monkeypatch, consumer, producers, budget, retry_delay=0.0), consumer, [records(0, 1, 2)]
    )
    assert transactions(producers.made[0])[0] == [("in", 0, 1)]
    # rewound to the committed offset (the fake's committed offsets stay at 0: what the broker says)
    assert consumer.seeks == [("in", 0, 0)]
    assert producers.made[0].calls.count("commit") == 2, "the third message waits for the next poll"


def test_the_rest_of_an_expired_poll_goes_back_to_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = TransactionBudget(max_bytes=10**9, max_seconds=0.0, poll_seconds=0.0)
    consumer, producers = FakeConsumer(), Producers()
    poll = [*records(5, 6, 7), *records(3, partition=1)]
    run_polls(loop_with(monkeypatch, consumer, producers, budget), consumer, [poll])
    assert transactions(producers.made[0]) == [[("in", 0, 6)]]
    assert sorted(consumer.seeks) == [("in", 0, 6), ("in", 1, 3)], "each partition from its first unprocessed"
