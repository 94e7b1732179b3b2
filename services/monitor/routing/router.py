"""The alert router: every alert on ``aoetl.alerts`` delivered to every configured endpoint that wants it.

One consumer loop (a thread of the monitor process) per endpoint, each in a consumer group of its own,
``aoetl-alert-route.<endpoint><topic suffix>``, reading the alerts topic ``read_committed`` (the monitor
writes each alert exactly once, in a transaction: ``services.monitor.alerts``). Per endpoint, because
endpoints fail independently: a receiver that is down for an hour holds back its own alerts, not the
others'.

The guarantee, exactly: for each (alert, endpoint) the router makes HTTP attempts until a terminal
outcome (delivered, rejected, refused, exhausted, misconfigured, stale), and only then commits the alert's
offset for that endpoint's group, synchronously, before it reads the next alert. So:

* a graceful stop (SIGTERM), a rebalance or a crash *before* the terminal outcome: the alert is not
  committed, and the next owner of the partition (this process restarted, or another replica) tries it
  again: nothing is lost;
* after a 2xx the offset is committed before anything else happens, so a restart, a stop or a rebalance
  afterwards never delivers the alert to that endpoint again; revocation happens only inside ``poll``,
  between alerts, and the group's next member starts after the committed offset;
* the one window left is a hard crash (SIGKILL, power loss) or a failed commit between the receiver's
  2xx and the commit: the alert is then delivered once more, with the same ``webhook-id`` (the alert id)
  and body, so a receiver that dedupes by ``webhook-id``, as Standard Webhooks receivers do, sees it once.
  HTTP offers no transaction to close that window; recording the delivery elsewhere first would only
  move it.

So: at-least-once per (alert, endpoint), and exactly-once for every stop, restart and rebalance short of a
crash inside that window; effectively-once at receivers that dedupe by ``webhook-id``.

An ``exhausted`` alert is not dropped: before its offset is committed it becomes a dead letter on the
dead-letters topic (``services.monitor.routing.dead_letters``, the stages' one path), acknowledged first;
if it cannot be written the route fails and the alert stays uncommitted. Its replay (``aoetl dlq replay``)
is a record like any alert's, with the letter's id and endpoint in its headers: that endpoint's route
delivers it (as old as the replay, under the letter's id as ``webhook-id``), every other route commits it
and delivers nothing (``services.monitor.routing.dead_letters`` says why).

Replicas: every monitor replica runs the same loops in the same groups; the alerts topic has one
partition, so one replica delivers each endpoint's alerts and the others stand by (a failover, not a
speed-up: alerts are rare). ``max.poll.interval.ms`` is set above the longest a delivery can take (its
retry budget plus one wait and one attempt), so a slow receiver never makes the owner leave the group
mid-delivery and a second replica start the same alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from services.monitor.routing.dead_letters import DeadLetters, KafkaDeadLetters, exhausted, letter_id
from services.monitor.routing.delivery import Deliverer, Outcome
from services.monitor.routing.settings import AlertEndpoint, AlertRoutingSettings
from shared.avro import AvroDecodeError
from shared.contracts import Alert
from shared.dead_letters import Redrive
from shared.kafka.clients import KafkaClients
from shared.kafka.messages import timestamp_ms
from shared.kafka.types import Serde
from shared.metrics import PROCESSING_ERRORS
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

POLL_S = 0.5
COMMIT_ATTEMPTS = 3

OnFailure = Callable[[str, BaseException], None]


def route_group(prefix: str, endpoint: str, suffix: str) -> str:
    """The endpoint's consumer group (the Kafka ACLs grant the monitor the ``aoetl-alert-route.`` prefix)."""
    return f"{prefix}.{endpoint}{suffix}"


class EndpointRoute:
    """The consumer loop of one endpoint, in a thread of its own."""

    def __init__(
        self,
        name: str,
        endpoint: AlertEndpoint,
        settings: AlertRoutingSettings,
        *,
        kafka: KafkaSettings,
        topic: str,
        group: str,
        serde: Serde,
        stop: threading.Event,
        on_failure: OnFailure,
        dead_letters: DeadLetters,
        deliverer: Deliverer | None = None,
    ):
        self.name = name
        self.endpoint = endpoint
        self.topic = topic
        self.group = group
        self._kafka = kafka
        self._serde = serde
        self._stop = stop
        self._on_failure = on_failure
        self._deliverer = deliverer or Deliverer(name, endpoint, settings, stop)
        self._dead_letters = dead_letters
        longest_delivery_s = settings.max_elapsed_s + settings.max_backoff_s + endpoint.timeout_s
        self._max_poll_interval_ms = int((longest_delivery_s + 60) * 1000)
        self.joined = threading.Event()  # the group gave us an assignment (possibly empty: a standby)
        self._thread = threading.Thread(target=self._run, name=f"alert-route-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            overrides: dict[str, Any] = {"max.poll.interval.ms": self._max_poll_interval_ms}
            consumer = KafkaClients(self._kafka).consumer(self.group, **overrides)
            try:
                consumer.subscribe([self.topic], on_assign=self._assigned)
                self._loop(consumer)
            finally:
                consumer.close()  # leaves the group now: a standby replica takes over at once
                self._deliverer.close()
                self._dead_letters.close()
        except Exception as exc:
            self._on_failure(f"alert-route-{self.name}", exc)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        self.joined.set()

    def _loop(self, consumer: Any) -> None:
        while not self._stop.is_set():
            msg = consumer.poll(POLL_S)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                _log.warning("alert router %s: %s", self.name, error)
                continue
            outcome = self._route(msg)
            if outcome is Outcome.INTERRUPTED:
                return  # not committed: whoever reads the partition next tries it again
            self._commit(consumer, msg)

    def _route(self, msg: Message) -> Outcome | None:
        try:
            alert = self._serde.decode(msg.value() or b"", Alert)
        except AvroDecodeError as exc:
            _log.warning(
                "alert router %s: skipping an undecodable record at offset %s: %s",
                self.name,
                msg.offset(),
                exc,
            )
            return None
        redrive = Redrive.of(msg)
        if not self._acts_on(alert, redrive) or not self.endpoint.wants(alert):
            return None
        replay_of = redrive.letter_id
        sent_ms = timestamp_ms(msg) if replay_of is not None else None
        try:
            outcome = self._deliverer.deliver(
                alert, webhook_id=replay_of, sent_at=sent_ms / 1000 if sent_ms is not None else None
            )
        except Exception:
            # As the monitor's agents do (services.monitor.supervision): a bug or an odd alert skips that
            # one alert, loudly, rather than stopping every delivery or crash-looping on the same record.
            PROCESSING_ERRORS.labels("alert_routing", "false").inc()
            _log.exception(
                "alert router %s: skipping alert %s after an unexpected error", self.name, alert.alert_id
            )
            return None
        if outcome is Outcome.EXHAUSTED:
            # Not dropped: a dead letter, acknowledged before the commit. A letter that cannot be written
            # raises here, outside the skip above: the alert stays uncommitted and the route fails.
            error = exhausted(alert, self.name, self._deliverer.attempts, self._deliverer.last_attempt)
            self._dead_letters.write(msg, alert, error, self.name, replay_of)
        return outcome

    def _acts_on(self, alert: Alert, redrive: Redrive) -> bool:
        """A new alert: every route. A replay: its letter's endpoint's route only (named in the header,
        or, for a letter written before DeadLetter v3, only in the letter's deterministic id)."""
        if redrive.letter_id is None:
            return True
        mine = (
            redrive.meant_for(self.name)
            if redrive.recipient is not None
            else redrive.letter_id == letter_id(alert, self.name)
        )
        if not mine:
            _log.debug("alert router %s: a replay of dead letter %s is another endpoint's", self.name,
                       redrive.letter_id)  # fmt: skip
        return mine

    def _commit(self, consumer: Any, msg: Message) -> None:
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                consumer.commit(message=msg, asynchronous=False)
                return
            except KafkaException as exc:
                code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
                if code == KafkaError._NO_OFFSET:
                    return
                _log.warning(
                    "alert router %s: commit of offset %s failed (attempt %d): %s",
                    self.name, msg.offset(), attempt, exc,
                )  # fmt: skip
        # The delivery stands; the next owner will deliver it again, with the same webhook-id.
        _log.error(
            "alert router %s: offset %s not committed; it may be delivered again", self.name, msg.offset()
        )


class AlertRouter:
    """The loops of every configured endpoint. ``start`` once; ``stop`` waits for in-flight attempts."""

    def __init__(
        self,
        settings: AlertRoutingSettings,
        *,
        kafka: KafkaSettings,
        topic: str,
        topic_suffix: str,
        serde: Serde,
        on_failure: OnFailure,
        dead_letter_topic: str,
    ):
        self._stop = threading.Event()
        self.routes = [
            EndpointRoute(
                name,
                endpoint,
                settings,
                kafka=kafka,
                topic=topic,
                group=route_group(settings.group_prefix, name, topic_suffix),
                serde=serde,
                stop=self._stop,
                on_failure=on_failure,
                dead_letters=KafkaDeadLetters(kafka, dead_letter_topic, serde),
            )
            for name, endpoint in sorted(settings.endpoints.items())
        ]
        self._join_timeout_s = max((e.timeout_s for e in settings.endpoints.values()), default=0) + 30

    def start(self) -> None:
        for route in self.routes:
            route.start()
        if self.routes:
            _log.info("alert router: endpoints %s", ", ".join(r.name for r in self.routes))

    def is_ready(self) -> bool:
        return all(route.joined.is_set() and route.is_alive() for route in self.routes)

    def stop(self) -> None:
        """Ends every wait at once; an HTTP attempt in flight finishes (bounded by its timeout) and is
        committed if it was terminal."""
        self._stop.set()
        for route in self.routes:
            route.join(self._join_timeout_s)
