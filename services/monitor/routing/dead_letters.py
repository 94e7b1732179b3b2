"""An alert whose delivery to an endpoint exhausted its retries becomes a dead letter, so it is not dropped
silently: a ``DeadLetter`` on the dead-letters topic, built by the one path every stage uses
(``shared.dead_letters.dead_letter_for``), so it carries the same facts as theirs. Its origin is the
alert's record (alerts topic, partition, offset, key, writer fingerprint) and its payload the alert's
bytes; the stage is ``monitor``, the run and tenant are the alert's, and the error
(``AlertDeliveryExhausted``) names the endpoint, the attempts and what the last one got, never the URL.
The monitor's own dead-letter agent then counts it like any other (``aoetl_dead_letters_total{stage=
"monitor", error_class="AlertDeliveryExhausted"}``) and it adds to the dead-letter growth alert's count.

Written before the alert's offset is committed for the endpoint's group, and acknowledged (``acks=all``)
first: a letter that cannot be written raises ``DeadLetterNotWrittenError``, the alert stays uncommitted,
the route's thread fails and with it the monitor, and the next owner of the partition tries the alert
again: nothing is lost. The router is no Kafka transaction (its other outcomes end in HTTP), so a crash
between the acknowledgement and the commit writes the letter a second time: its id is deterministic
(``letter_id``: the alert and the endpoint), so the two are recognisably one.

**Replayed to its endpoint only.** The letter names its endpoint as its ``recipient`` (DeadLetter v3).
``aoetl dlq replay`` puts the alert back on the alerts topic with the letter's id and recipient in its
headers (``shared.dead_letters.redrive_headers``; the ACLs let the CLI write there for this), and every
endpoint's route reads it: the recipient's delivers it, the others commit it and deliver nothing
(``services.monitor.routing.router``). A letter written before v3 names its endpoint in its id only: a
route acts on its replay when ``letter_id(alert, its name)`` is the replayed id. The replay's
``webhook-id`` is the letter's id, not the alert's: a receiver that dedupes by ``webhook-id`` and
recorded the original (say it answered 503 after storing it) still takes the replay, while a second
replay of the same letter (or the replay's own redelivery) is the same message to it. A replay that is
exhausted again is a new letter (``letter_id`` of the alert, endpoint and replayed letter), replayable in
turn. The console does not replay these (the alerts topic is no stage input: ``services.gateway.redrive``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from confluent_kafka import KafkaError, Message, Producer

from services.monitor.routing.delivery import Attempt
from shared.contracts import Alert, Stage
from shared.dead_letters import dead_letter_for, dead_letter_key
from shared.errors import AoetlError, TransientError
from shared.kafka.clients import KafkaClients
from shared.kafka.types import Serde
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0
_LETTER_IDS = uuid.UUID("5d1f0c8e-3b7a-4c55-9a4e-6f2b8d0e1a77")  # the namespace of letter_id


class AlertDeliveryExhausted(AoetlError):
    """An alert's delivery to an endpoint ran out of attempts (or of its time budget)."""


class DeadLetterNotWrittenError(TransientError):
    """The dead letter of an exhausted alert was not acknowledged: the alert must not be committed."""


def letter_id(alert: Alert, endpoint: str, replay_of: str | None = None) -> str:
    """The same (alert, endpoint) always gives the same dead-letter id; a replay's (``replay_of``: the
    replayed letter's id) another one, the same for every redelivery of that replay."""
    tail = f"\x00{replay_of}" if replay_of is not None else ""
    return uuid.uuid5(_LETTER_IDS, f"{alert.alert_id}\x00{endpoint}{tail}").hex


def exhausted(alert: Alert, endpoint: str, attempts: int, last: Attempt | None) -> AlertDeliveryExhausted:
    got = "nothing"
    if last is not None:
        got = last.outcome.value + (f" (HTTP {last.status})" if last.status is not None else "")
    return AlertDeliveryExhausted(
        f"alert {alert.alert_id} ({alert.kind.value}) not delivered to endpoint {endpoint!r}: "
        f"{attempts} attempts, the last one got {got}"
    )


class DeadLetters(Protocol):
    """Where a route writes the dead letter of an exhausted alert; returns once it is durable."""

    def write(
        self,
        message: Message,
        alert: Alert,
        error: AlertDeliveryExhausted,
        endpoint: str,
        replay_of: str | None = None,
    ) -> None: ...

    def close(self) -> None: ...


class KafkaDeadLetters:
    """Dead letters on the dead-letters topic, through an idempotent producer made on first use (most
    routes never need one). Used by one route thread."""

    def __init__(self, kafka: KafkaSettings, topic: str, serde: Serde):
        self._kafka = kafka
        self._topic = topic
        self._serde = serde
        self._producer: Producer | None = None

    def write(
        self,
        message: Message,
        alert: Alert,
        error: AlertDeliveryExhausted,
        endpoint: str,
        replay_of: str | None = None,
    ) -> None:
        letter = dead_letter_for(
            message,
            Stage.MONITOR,
            error,
            run_id=alert.run_id,
            tenant=alert.tenant,
            dead_letter_id=letter_id(alert, endpoint, replay_of),
            recipient=endpoint,
        )
        if self._producer is None:
            self._producer = KafkaClients(self._kafka).producer()
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(err)

        self._producer.produce(
            self._topic,
            key=dead_letter_key(message, alert.run_id),
            value=self._serde.encode(letter),
            on_delivery=on_delivery,
        )
        if self._producer.flush(FLUSH_TIMEOUT_S) or failures:
            why = failures[0].str() if failures else f"not acknowledged in {FLUSH_TIMEOUT_S:g}s"
            raise DeadLetterNotWrittenError(f"dead letter of alert {alert.alert_id} not written: {why}")
        _log.warning(
            "alert %s to %s exhausted its retries: dead letter %s",
            alert.alert_id, endpoint, letter.dead_letter_id,
            extra={"endpoint": endpoint, "alert_id": alert.alert_id, "dead_letter_id": letter.dead_letter_id},
        )  # fmt: skip

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(FLUSH_TIMEOUT_S)
