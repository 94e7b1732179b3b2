"""Errors the consumer hands the task loop (``shared.processing.loop``) while polling, with the fake clients
of ``tests.unit.kafka_fakes``.

The orchestrator subscribes to every tenant's request topic by a pattern. Before the first tenant there is
no such topic, and librdkafka reports the pattern as "Subscribed topic not available: ...: Unknown topic or
partition" (once per change; it keeps serving the other topics). The loop used to take that for a broker
failure and back off, stalling the shared requests topic and the events with it: a notice must not pause
the loop, a real broker error still must."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError

import shared.kafka.transaction as transaction_module
from shared.avro.serde import AvroSerde
from shared.contracts import EventKind, RunEvent, Stage
from shared.processing import MessageContext, Output, RetryPolicy
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, FakeRecord, fake_loop

pytestmark = pytest.mark.unit

SERDE = AvroSerde()
PATTERN = r"^aoetl\.requests\.tenant\.[a-z0-9][a-z0-9-]{0,62}$"


class ErrorMessage:
    """What ``Consumer.consume`` returns for a consumer error: a message whose ``error()`` is set."""

    def __init__(self, code: int, text: str) -> None:
        self._error = KafkaError(code, text)

    def error(self) -> KafkaError:
        return self._error


class RecordingStop(threading.Event):
    """The loop's stop event; its backoffs are ``wait`` calls, recorded and not slept."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.waits.append(timeout)
        return self.is_set()


def copy(value: Any, context: MessageContext) -> list[Output]:
    return [Output("out", value.run_id, value)]


def run_with_backoffs(
    monkeypatch: pytest.MonkeyPatch, polls: list[list[Any]]
) -> tuple[list[float], FakeProducer]:
    """Run a loop, one consumer poll per entry of ``polls``; the backoffs it took and its producer."""
    producer = FakeProducer()
    monkeypatch.setattr(transaction_module, "make_producer", lambda *a, **kw: producer)
    consumer, stop, pending = FakeConsumer(), RecordingStop(), list(polls)

    def consume(num_messages: int = 1, timeout: float = -1) -> list[Any]:
        if num_messages > 1:  # the rest of a poll (``consume_available``): all of it came first
            return []
        if not pending:
            stop.set()
            return []
        return pending.pop(0)

    consumer.consume = consume  # type: ignore[method-assign]
    loop = fake_loop(monkeypatch, consumer, copy, retry=RetryPolicy(initial_delay=30.0, max_delay=30.0))
    loop.run(stop)
    return stop.waits, producer


def record(offset: int) -> FakeRecord:
    event = RunEvent(run_id=f"r{offset}", kind=EventKind.RUN_FINISHED, stage=Stage.TRANSFORM)
    return FakeRecord(offset, SERDE.encode(event))


def test_a_subscribed_pattern_with_no_topic_yet_does_not_pause_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = ErrorMessage(
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        f"Subscribed topic not available: {PATTERN}: Broker: Unknown topic or partition",
    )
    waits, producer = run_with_backoffs(monkeypatch, [[missing], [record(0)]])
    assert waits == [], "no backoff for a topic that is not there yet"
    assert [topic for topic, _, _ in producer.produced] == ["out"], "the next poll's record went on"


def test_a_broker_error_while_polling_still_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    down = ErrorMessage(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Connection refused")
    waits, producer = run_with_backoffs(monkeypatch, [[down], [record(0)]])
    assert len(waits) == 1 and 15.0 <= waits[0] <= 30.0, waits
    assert [topic for topic, _, _ in producer.produced] == ["out"]
