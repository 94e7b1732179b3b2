"""Issue 12: ``aoetl dlq replay`` of an exhausted alert delivery's dead letter reaches the endpoint that
exhausted it and no other. The letter names its endpoint (DeadLetter v3 ``recipient``), the replay carries
it in a header beside the letter's id, every other route commits the record and delivers nothing; the
recipient's route delivers it under the letter's id as ``webhook-id`` (a receiver's dedupe of the
original does not swallow it), as old as the replay. Without a broker: the fakes of
``test_alert_dead_letters``."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from aoetl.commands import dlq
from services.monitor.routing import dead_letters as dead_letters_module
from services.monitor.routing.dead_letters import letter_id
from shared.contracts import DeadLetter, ErrorInfo, Origin, Stage, utcnow
from shared.dead_letters import REDRIVE_HEADER, REDRIVE_RECIPIENT_HEADER, Redrive, redrive_headers
from shared.webhooks.signatures import verify_standard
from tests.unit.kafka_fakes import FakeRecord
from tests.unit.test_alert_dead_letters import (
    SERDE,
    Consumer,
    Letters,
    Producer,
    alert_record,
    kafka_letters,
    route,
)
from tests.unit.test_alert_routing import SECRET, URL, Receiver, alert

pytestmark = pytest.mark.unit

NOW_MS = int(time.time() * 1000)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_URL", URL)
    monkeypatch.setenv("ALERT_SECRET", SECRET)


def routes_read(record: FakeRecord, *answers: int) -> tuple[dict[str, Receiver], list[str], Letters]:
    """Two endpoints' routes (``ops`` answered with ``answers``, ``audit`` with 200s) read one record."""
    log: list[str] = []
    letters = Letters(log)
    receivers = {"ops": Receiver(*answers), "audit": Receiver(200)}
    for name, receiver in receivers.items():
        stop = threading.Event()
        route(receiver, letters, stop, name=name)._loop(Consumer([record], stop, log))
    return receivers, log, letters


def replay(letter: str, recipient: str | None, at_ms: int = NOW_MS, **kw: object) -> FakeRecord:
    headers = [(REDRIVE_HEADER, letter.encode())]
    if recipient is not None:
        headers.append((REDRIVE_RECIPIENT_HEADER, recipient.encode()))
    # the alert is older than the router's max age (a day): a replay is as old as its record
    return alert_record(alert(at=utcnow() - timedelta(days=3), **kw), 9, headers, at_ms)


def test_a_new_alert_goes_to_every_endpoint() -> None:
    receivers, log, _ = routes_read(alert_record(alert(), 5), 200)
    assert [len(r.requests) for r in receivers.values()] == [1, 1]
    assert log == ["commit 5", "commit 5"]


def test_a_replay_is_delivered_to_its_recipient_only_under_the_letters_id() -> None:
    sent = alert()
    original = letter_id(sent, "ops")
    record = replay(original, "ops", alert_id=sent.alert_id)
    receivers, log, letters = routes_read(record, 200)
    (request,) = receivers["ops"].requests
    assert receivers["audit"].requests == [] and log == ["commit 9", "commit 9"]  # both committed
    headers = dict(request.headers)
    assert headers["webhook-id"] == original != sent.alert_id  # not the original's: not deduped away
    verify_standard(request.content, headers, [SECRET])
    assert letters.written == []


def test_a_replay_of_a_letter_written_before_v3_is_its_endpoint_s_by_the_letter_id() -> None:
    sent = alert()
    record = replay(letter_id(sent, "audit"), None, alert_id=sent.alert_id)  # no recipient header
    receivers, _, _ = routes_read(record, 200)
    assert receivers["ops"].requests == [] and len(receivers["audit"].requests) == 1


def test_an_old_replay_is_stale_and_an_exhausted_replay_is_a_new_letter_for_the_same_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = alert()
    original = letter_id(sent, "ops")
    old = replay(original, "ops", at_ms=NOW_MS - 3 * 86_400_000, alert_id=sent.alert_id)
    receivers, log, _ = routes_read(old, 200)
    assert receivers["ops"].requests == [] and log == ["commit 9", "commit 9"]

    receivers, log, letters = routes_read(replay(original, "ops", alert_id=sent.alert_id), 503, 503, 503)
    assert len(receivers["ops"].requests) == 3 and receivers["audit"].requests == []
    assert [w[3] for w in letters.written] == ["ops"] and letters.replays_of == [original]
    producer = Producer()
    message, alert_, error, name = letters.written[0]
    kafka_letters(monkeypatch, producer).write(message, alert_, error, name, original)
    again = SERDE.decode(producer.produced[0][2], DeadLetter)
    assert again.recipient == "ops"
    assert again.dead_letter_id == letter_id(sent, "ops", original) != original  # replayable in turn
    assert dead_letters_module.letter_id(sent, "ops", original) == again.dead_letter_id  # stable


def test_the_cli_replay_carries_the_letter_s_id_and_recipient(monkeypatch: pytest.MonkeyPatch) -> None:
    letter = DeadLetter(
        origin=Origin(topic="aoetl.alerts", partition=0, offset=3, key=b"r1"),
        stage=Stage.MONITOR,
        error=ErrorInfo(error_class="AlertDeliveryExhausted", message="x"),
        payload=b"alert",
        recipient="ops",
    )
    assert redrive_headers(letter) == [
        (REDRIVE_HEADER, letter.dead_letter_id.encode()),
        (REDRIVE_RECIPIENT_HEADER, b"ops"),
    ]
    sent: list[dict[str, object]] = []
    monkeypatch.setattr(dlq, "produce_sync", lambda producer, topic, value, **kw: sent.append(kw))

    class Client:
        _producer = None

    assert dlq.replay_letters(Client(), [letter]) == 1  # type: ignore[arg-type]
    (call,) = sent
    redrive = Redrive.of(alert_record(alert(), 0, call["headers"]))  # type: ignore[arg-type]
    assert (redrive.letter_id, redrive.recipient) == (letter.dead_letter_id, "ops")
    assert redrive.meant_for("ops") and not redrive.meant_for("audit")
    for_everyone = letter.model_copy(update={"recipient": None})
    assert redrive_headers(for_everyone) == [(REDRIVE_HEADER, letter.dead_letter_id.encode())]
    assert Redrive().meant_for("audit")


def test_the_cli_may_write_the_alerts_topic_to_replay_there() -> None:
    from shared.kafka.acls import Operation, Principal, topics_of
    from shared.kafka.topics import Topics

    assert Topics.ALERTS in topics_of(Principal.CLI, Operation.WRITE)
    assert Topics.ALERTS not in topics_of(Principal.GATEWAY, Operation.WRITE)
