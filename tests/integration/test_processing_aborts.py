"""Regressions found by the broker-restart fault test and the soak, around aborted transactions.

1. After a broker restart librdkafka's ``send_offsets_to_transaction`` can block forever, past its own
   timeout (librdkafka issues #5456, #5511), which froze the orchestrator mid-run. The loop must give such a
   producer up after a deadline, fence it with a new producer of the same transactional id, and go on
   without losing or duplicating anything.
2. After a broker restart a producer can keep its transaction-coordinator request queued and never sent:
   every commit of that client times out while a fresh client works. After repeated failures the loop
   must replace the producer instead of aborting and reusing it forever.
3. A stateful handler (the orchestrator's run book) remembers what it answered; when the transaction
   holding those answers is aborted, that memory must be rebuilt from what is committed, or the answers
   are never sent again (a run left without its finalize or its result). The loop calls ``on_rollback``.
4. After a transaction-coordinator failover librdkafka can report the loop's producer fenced although no
   other producer with its transactional id does any work (issue 14: the stage exited). A fence alone
   must replace the producer and redo the batch; here a real one, from a producer of the same id that
   initialises once and stays idle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from shared.contracts import Contract, RunEvent, Stage
from shared.kafka.clients import make_producer
from shared.kafka.transaction import transactional_id
from shared.processing import LoopConfig, MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.settings import KafkaSettings
from tests.helpers import wait_until
from tests.integration.test_runtime import SERDE, Topology, ids, produce_events, read, topology
from tests.support.hung_calls import (
    TASK_LOOP_PRODUCERS,
    FirstSendOffsetsHangs,
    SendOffsetsAlwaysTimesOut,
    hung_send_offsets,
    wrap_first_transactional_producer,
)

pytestmark = pytest.mark.integration

__all__ = ["topology"]  # the fixture, re-used


@pytest.fixture
def hanging_first_producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    with hung_send_offsets(monkeypatch, TASK_LOOP_PRODUCERS) as hung:
        yield hung.made


def test_a_hung_send_offsets_call_is_abandoned_and_work_goes_on_exactly_once(
    topology: Topology, hanging_first_producer: list[Any]
) -> None:
    events = produce_events(topology.bootstrap, topology.source, 40)
    stop = topology.start(topology.loop(topology.copy(), kafka_timeout=2.0))
    wait_until(lambda: hanging_first_producer, timeout=30, message="the first producer")
    first = hanging_first_producer[0]
    assert isinstance(first, FirstSendOffsetsHangs)
    wait_until(first.hung.is_set, timeout=30, message="the hung call")
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)
    assert not topology.errors
    assert len(hanging_first_producer) >= 2, "the hung producer was not replaced"
    assert ids(copied) == Counter(e.event_id for e in events)
    assert topology.metric("aoetl_transactions_total", outcome="aborted") >= 1


class AnswersOnce:
    """Like the orchestrator's run book: answers each input once and remembers that it did."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.answered: set[str] = set()
        self.rebuilds = 0

    def handle(self, value: Contract, context: MessageContext) -> list[Output]:
        assert isinstance(value, RunEvent)
        if value.event_id in self.answered:
            return []
        self.answered.add(value.event_id)
        return [Output(self.topology.sink, context.key, value)]

    def rebuild(self, consumer: Any) -> None:
        """What was answered is what is committed in the output topic."""
        self.rebuilds += 1
        self.answered = set(ids(read(self.topology.bootstrap, self.topology.sink, 0)))


def test_an_aborted_transaction_makes_a_stateful_handler_rebuild_its_state(
    topology: Topology, hanging_first_producer: list[Any]
) -> None:
    events = produce_events(topology.bootstrap, topology.source, 40)
    book = AnswersOnce(topology)
    config = LoopConfig(
        service=topology.name,
        stage=Stage.TRANSFORM,
        instance_id="i1",
        group_id=f"{topology.name}-group",
        input_types={topology.source: RunEvent},
        dead_letter_topic=topology.dead_letters,
        poll_timeout=0.2,
        kafka_timeout=2.0,
    )
    loop = ProcessingLoop(
        KafkaSettings(bootstrap_servers=topology.bootstrap),
        config,
        book.handle,
        SERDE,
        on_rollback=book.rebuild,
    )
    stop = topology.start(loop)
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)
    assert not topology.errors
    assert book.rebuilds >= 1
    assert ids(copied) == Counter(e.event_id for e in events), "answers of the aborted batch were lost"


def test_a_producer_whose_commits_keep_failing_is_replaced(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = wrap_first_transactional_producer(monkeypatch, TASK_LOOP_PRODUCERS, SendOffsetsAlwaysTimesOut)
    events = produce_events(topology.bootstrap, topology.source, 40)
    stop = topology.start(
        topology.loop(topology.copy(), retry=RetryPolicy(initial_delay=0.05, max_delay=0.2))
    )
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)
    assert not topology.errors
    assert made[0].failures >= 1 and len(made) >= 2, "the stuck producer was never replaced"
    assert ids(copied) == Counter(e.event_id for e in events)


def test_a_fence_with_no_working_twin_replaces_the_producer_and_work_goes_on_exactly_once(
    topology: Topology,
) -> None:
    before = produce_events(topology.bootstrap, topology.source, 30)
    loop = topology.loop(topology.copy(), max_batch=10, kafka_timeout=10.0)
    stop = topology.start(loop)
    read(topology.bootstrap, topology.sink, len(before))
    settings = KafkaSettings(bootstrap_servers=topology.bootstrap)
    twin = make_producer(settings, transactional_id=transactional_id(topology.name, "i1"))
    twin.init_transactions(30)  # a newer epoch: the loop's producer is fenced at its next transaction
    after = produce_events(topology.bootstrap, topology.source, 30)
    copied = read(topology.bootstrap, topology.sink, len(before) + len(after))
    topology.stop(stop)
    assert not topology.errors, "a lone fence stopped the loop"
    assert topology.metric("aoetl_producer_fences_total") >= 1, "the loop's producer was never fenced"
    assert ids(copied) == Counter(e.event_id for e in before + after)
