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
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import shared.kafka.transaction
from shared.contracts import Contract, RunEvent, Stage
from shared.kafka.clients import make_producer
from shared.processing import LoopConfig, MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.settings import KafkaSettings
from tests.helpers import wait_until
from tests.integration.test_runtime import SERDE, Topology, ids, produce_events, read, topology

pytestmark = pytest.mark.integration

__all__ = ["topology"]  # the fixture, re-used


class FirstSendOffsetsHangs:
    """A real transactional producer whose first ``send_offsets_to_transaction`` blocks until released."""

    def __init__(self, real: Any, release: threading.Event):
        self._real, self._release = real, release
        self.hung = threading.Event()

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.hung.set()
        self._release.wait()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "released by the test"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def hanging_first_producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    release = threading.Event()
    made: list[Any] = []

    def factory(settings: KafkaSettings, **overrides: Any) -> Any:
        producer: Any = make_producer(settings, **overrides)
        if "transactional_id" in overrides and not made:
            producer = FirstSendOffsetsHangs(producer, release)
        made.append(producer)
        return producer

    monkeypatch.setattr(shared.kafka.transaction, "make_producer", factory)
    monkeypatch.setattr(shared.kafka.transaction, "HUNG_CALL_GRACE_S", 0.5)
    yield made
    release.set()  # lets the abandoned call's thread end


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


class SendOffsetsAlwaysTimesOut:
    """A real transactional producer stuck on a dead coordinator connection: every send_offsets times out."""

    def __init__(self, real: Any):
        self._real = real
        self.failures = 0

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.failures += 1
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets to transaction"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_producer_whose_commits_keep_failing_is_replaced(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []

    def factory(settings: KafkaSettings, **overrides: Any) -> Any:
        producer: Any = make_producer(settings, **overrides)
        if "transactional_id" in overrides and not made:
            producer = SendOffsetsAlwaysTimesOut(producer)
        made.append(producer)
        return producer

    monkeypatch.setattr(shared.kafka.transaction, "make_producer", factory)
    events = produce_events(topology.bootstrap, topology.source, 40)
    stop = topology.start(
        topology.loop(topology.copy(), retry=RetryPolicy(initial_delay=0.05, max_delay=0.2))
    )
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)
    assert not topology.errors
    assert made[0].failures >= 1 and len(made) >= 2, "the stuck producer was never replaced"
    assert ids(copied) == Counter(e.event_id for e in events)
