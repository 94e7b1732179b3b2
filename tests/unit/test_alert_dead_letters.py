"""Issue 12: an alert whose delivery exhausts its retries is not dropped: the route writes it as a
``DeadLetter`` (the stages' one path, ``shared.dead_letters``) on the dead-letters topic, acknowledged
before the alert's offset is committed, and the monitor counts it like every dead letter. Without a broker:
the HTTP receiver is httpx's mock transport (the fakes of ``test_alert_routing``), the consumer and the
producer are fakes of the calls the route makes."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from services.monitor import metrics
from services.monitor.routing import dead_letters as dead_letters_module
from services.monitor.routing.dead_letters import (
    AlertDeliveryExhausted,
    DeadLetterNotWrittenError,
    KafkaDeadLetters,
    letter_id,
)
from services.monitor.routing.delivery import Outcome
from services.monitor.routing.router import EndpointRoute
from shared.avro import AvroSerde
from shared.contracts import Alert, DeadLetter, Stage
from shared.kafka.clients import KafkaClients
from shared.settings import KafkaSettings
from tests.unit.kafka_fakes import FakeRecord
from tests.unit.test_alert_routing import SECRET, URL, Receiver, alert, deliverer, endpoint, routing

pytestmark = pytest.mark.unit

SERDE = AvroSerde()
ALERTS = "aoetl.alerts-t"
LETTERS = "aoetl.deadletters-t"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_URL", URL)
    monkeypatch.setenv("ALERT_SECRET", SECRET)


def alert_record(
    value: Alert, offset: int, headers: list[tuple[str, bytes]] | None = None, at_ms: int = 0
) -> FakeRecord:
    """A consumed alert record; ``headers``: a replay's, ``at_ms`` its time."""
    return FakeRecord(offset, SERDE.encode(value), ALERTS, key=b"r1", headers=headers, at_ms=at_ms)


class Consumer:
    """Hands out its records, then asks the route to stop; records every commit, in order with writes."""

    def __init__(self, records: list[FakeRecord], stop: threading.Event, log: list[str]) -> None:
        self.records, self.stop, self.log = list(records), stop, log

    def poll(self, timeout: float) -> FakeRecord | None:
        if not self.records:
            self.stop.set()
            return None
        return self.records.pop(0)

    def commit(self, message: FakeRecord, asynchronous: bool) -> None:
        self.log.append(f"commit {message.offset()}")


class Letters:
    """The route's dead letters, recorded (``fail``: the next write raises, as a broker that does not
    acknowledge makes ``KafkaDeadLetters`` raise)."""

    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail
        self.written: list[tuple[Any, Alert, AlertDeliveryExhausted, str]] = []
        self.replays_of: list[str | None] = []

    def write(
        self,
        message: Any,
        alert: Alert,
        error: AlertDeliveryExhausted,
        endpoint: str,
        replay_of: str | None = None,
    ) -> None:
        if self.fail:
            raise DeadLetterNotWrittenError("not acknowledged")
        self.written.append((message, alert, error, endpoint))
        self.replays_of.append(replay_of)
        self.log.append(f"dead letter {message.offset()}")

    def close(self) -> None:
        self.log.append("closed")


def route(receiver: Receiver, letters: Letters, stop: threading.Event, name: str = "ops") -> EndpointRoute:
    sender, _ = deliverer(receiver, routing(max_attempts=3), name=name)
    return EndpointRoute(
        name,
        endpoint(),
        routing(max_attempts=3),
        kafka=KafkaSettings(),
        topic=ALERTS,
        group="aoetl-alert-route.ops-t",
        serde=SERDE,
        stop=stop,
        on_failure=lambda name, exc: None,
        dead_letters=letters,
        deliverer=sender,
    )


def test_an_exhausted_alert_is_dead_lettered_before_its_offset_is_committed() -> None:
    log: list[str] = []
    stop = threading.Event()
    letters = Letters(log)
    # the first alert exhausts its three attempts, the second is delivered at once
    receiver = Receiver(503, 502, 503, 200)
    first, second = alert(), alert(run_id="r2")
    route(receiver, letters, stop)._loop(
        Consumer([alert_record(first, 7), alert_record(second, 8)], stop, log)
    )
    assert log == ["dead letter 7", "commit 7", "commit 8"]  # only the exhausted one, written first
    ((message, dead, error, name),) = letters.written
    assert (message.offset(), dead, name) == (7, first, "ops")
    assert str(error) == (
        f"alert {first.alert_id} (RUN_FAILED) not delivered to endpoint 'ops': "
        "3 attempts, the last one got retry_status (HTTP 503)"
    )
    assert URL not in str(error) and "hooks.example.com" not in str(error)


def test_a_dead_letter_that_cannot_be_written_leaves_the_alert_uncommitted_and_fails_the_route() -> None:
    log: list[str] = []
    stop = threading.Event()
    with pytest.raises(DeadLetterNotWrittenError):
        route(Receiver(503, 503, 503), Letters(log, fail=True), stop)._loop(
            Consumer([alert_record(alert(), 7)], stop, log)
        )
    assert log == []  # no commit: the next owner of the partition delivers the alert again


def test_other_terminal_outcomes_are_not_dead_lettered() -> None:
    log: list[str] = []
    stop = threading.Event()
    letters = Letters(log)
    route(Receiver(400), letters, stop)._loop(Consumer([alert_record(alert(), 3)], stop, log))
    assert letters.written == [] and log == ["commit 3"]


class Producer:
    """The producer calls ``KafkaDeadLetters`` makes; ``error``: the delivery report's error."""

    def __init__(self, error: KafkaError | None = None, unacknowledged: int = 0) -> None:
        self.error, self.unacknowledged = error, unacknowledged
        self.produced: list[tuple[str, Any, bytes]] = []
        self._reports: list[Any] = []

    def produce(self, topic: str, key: Any, value: bytes, on_delivery: Any) -> None:
        self.produced.append((topic, key, value))
        self._reports.append(on_delivery)

    def flush(self, timeout: float) -> int:
        for report in self._reports:
            report(self.error, None)
        self._reports.clear()
        return self.unacknowledged


def kafka_letters(monkeypatch: pytest.MonkeyPatch, producer: Producer) -> KafkaDeadLetters:
    monkeypatch.setattr(KafkaClients, "producer", lambda self, **kw: producer)
    return KafkaDeadLetters(KafkaSettings(), LETTERS, SERDE)


def test_the_dead_letter_is_the_stages_one_record_with_the_alerts_origin_and_a_stable_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = Producer()
    letters = kafka_letters(monkeypatch, producer)
    sent = alert()
    record = alert_record(sent, 41)
    error = dead_letters_module.exhausted(sent, "ops", 5, None)
    letters.write(record, sent, error, "ops")
    letters.write(record, sent, error, "ops")  # a crash before the commit: written again, the same id
    (topic, key, value), (_, _, again) = producer.produced
    assert (topic, key) == (LETTERS, "r1")  # the run's key: `aoetl dlq` lists a run from one partition
    letter, second = SERDE.decode(value, DeadLetter), SERDE.decode(again, DeadLetter)
    assert letter.dead_letter_id == second.dead_letter_id == letter_id(sent, "ops")
    assert letter.recipient == "ops"  # DeadLetter v3: its replay is this endpoint's only
    assert letter_id(sent, "ops") != letter_id(sent, "pager")
    assert (letter.origin.topic, letter.origin.partition, letter.origin.offset, letter.origin.key) == (
        ALERTS, 0, 41, b"r1"
    )  # fmt: skip
    assert letter.origin.schema_fingerprint == SERDE.catalog.fingerprint(Alert.avro_name).hex()
    assert (letter.stage, letter.run_id, letter.tenant, letter.payload_format) == (
        Stage.MONITOR, "r1", "acme", "raw"
    )  # fmt: skip
    assert SERDE.decode(letter.payload, Alert) == sent  # the alert itself, to inspect
    assert letter.error.error_class == "AlertDeliveryExhausted" and not letter.error.transient
    assert "5 attempts, the last one got nothing" in letter.error.message


@pytest.mark.parametrize(
    "producer",
    [Producer(error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)), Producer(unacknowledged=1)],
)
def test_a_letter_the_broker_did_not_acknowledge_raises(
    monkeypatch: pytest.MonkeyPatch, producer: Producer
) -> None:
    letters = kafka_letters(monkeypatch, producer)
    sent = alert()
    with pytest.raises(DeadLetterNotWrittenError, match=sent.alert_id):
        letters.write(alert_record(sent, 1), sent, dead_letters_module.exhausted(sent, "ops", 1, None), "ops")


def test_the_monitor_counts_it_in_the_one_dead_letter_family(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Producer()
    sent = alert()
    error = dead_letters_module.exhausted(sent, "ops", 3, None)
    kafka_letters(monkeypatch, producer).write(alert_record(sent, 2), sent, error, "ops")
    labels = {"stage": "monitor", "error_class": "AlertDeliveryExhausted"}
    before = REGISTRY.get_sample_value("aoetl_dead_letters_total", labels) or 0.0
    metrics.observe_dead_letter(SERDE.decode(producer.produced[0][2], DeadLetter))
    assert REGISTRY.get_sample_value("aoetl_dead_letters_total", labels) == before + 1


def test_the_deliverer_says_how_many_attempts_an_alert_took_and_what_the_last_got() -> None:
    sender, _ = deliverer(Receiver(503, 429, 503), routing(max_attempts=3))
    assert sender.deliver(alert()) is Outcome.EXHAUSTED
    assert sender.attempts == 3 and sender.last_attempt is not None
    assert (sender.last_attempt.outcome, sender.last_attempt.status) == (Outcome.RETRY_STATUS, 503)
    sender, _ = deliverer(Receiver(200), routing(max_attempts=3))
    assert sender.deliver(alert()) is Outcome.DELIVERED and sender.attempts == 1


def test_the_monitor_may_write_the_dead_letters_topic() -> None:
    from shared.kafka.acls import Operation, Principal, topics_of
    from shared.kafka.topics import Topics

    assert Topics.DEAD_LETTERS in topics_of(Principal.MONITOR, Operation.WRITE)
