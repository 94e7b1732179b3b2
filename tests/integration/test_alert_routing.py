"""The alert router in the real monitor process, on the real broker, to a real HTTP receiver on loopback
(allow-listed for the router's egress): a failed run's RUN_FAILED alert reaches the receiver exactly once
accepted, signed so that the project's own Standard Webhooks verifier accepts it, after the receiver
answered 503 twice; the monitor is restarted in the middle of those retries and once more after the
delivery, and the alert is never delivered again. An alert whose attempts run out is not dropped: it is a
dead letter on the dead-letters topic, counted by the monitor, and not delivered again after a restart;
its replay (``aoetl dlq replay``) reaches that endpoint, under the letter's id, and not the other one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from shared.avro import AvroSerde
from shared.contracts import Alert, DeadLetter, ErrorInfo, RunStatus, Stage
from shared.kafka.topics import Topics
from shared.webhooks.signatures import verify_standard
from tests.helpers import wait_until
from tests.support.alert_receiver import Receiver, alert_receiver
from tests.support.monitor_stack import AlertReader, Stack, monitor_stack

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci1hbGVydHM="


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    with monitor_stack(kafka_bootstrap, tmp_path) as stack_:
        yield stack_


def routed(stack: Stack, receiver: Receiver, audit: Receiver | None = None) -> Stack:
    """Endpoint ``ops`` at ``receiver``, and ``audit`` (the same filters) at ``audit`` if given."""
    receivers = {"ops": receiver} | ({"audit": audit} if audit is not None else {})
    endpoints = {
        name: {
            "url": {"env": f"TEST_ALERT_URL_{name.upper()}"},
            "secret": {"env": "TEST_ALERT_SECRET"},
            "kinds": ["RUN_FAILED"],
            "timeout_s": 5,
        }
        for name in receivers
    }
    stack.env.update(
        {
            "AOETL_ALERT_ROUTING_ENDPOINTS": json.dumps(endpoints),
            "AOETL_ALERT_ROUTING_EGRESS_ALLOW": ",".join(f"127.0.0.1:{r.port}" for r in receivers.values()),
            "AOETL_ALERT_ROUTING_INITIAL_BACKOFF_S": "0.2",
            "AOETL_ALERT_ROUTING_MAX_BACKOFF_S": "60",
            "TEST_ALERT_SECRET": SECRET,
        }
        | {f"TEST_ALERT_URL_{name.upper()}": r.url for name, r in receivers.items()}
    )
    return stack


def fail(stack: Stack, run_id: str) -> None:
    stack.result(run_id, "orders", RunStatus.FAILED, [ErrorInfo(error_class="Boom", message="disk full")])


def test_a_failed_runs_alert_is_delivered_once_signed_after_two_503s_across_restarts(stack: Stack) -> None:
    # The first 503 asks for a minute's patience: the monitor is stopped during that wait.
    with alert_receiver((503, {"Retry-After": "60"}), (503, {})) as receiver:
        routed(stack, receiver)
        first, second = uuid.uuid4().hex, uuid.uuid4().hex
        reader = AlertReader(stack.bootstrap, stack.topic(Topics.ALERTS))
        monitor = stack.monitor("monitor-1")
        try:
            fail(stack, first)
            monitor.wait(lambda: receiver.deliveries, "the first (503) delivery")
            assert monitor.stop() == 0  # SIGTERM during the wait: the alert is not committed
        finally:
            monitor.stop()
        assert len(receiver.deliveries) == 1

        monitor = stack.monitor("monitor-2")
        try:
            monitor.wait(lambda: receiver.accepted(), "the delivery after the restart")
            (alert,) = [a for a in reader.read() if a.run_id == first]  # the topic holds the alert once
            attempts = receiver.of(alert.alert_id)
            assert [d.answered for d in attempts] == [503, 503, 200]
            for delivery in attempts:
                verify_standard(delivery.body, delivery.headers, [SECRET])
            body = attempts[-1].json()
            assert (body["type"], body["data"]["run_id"], body["data"]["kind"]) == (
                "aoetl.alert.run_failed", first, "RUN_FAILED"
            )  # fmt: skip
            delivered = monitor.metric("aoetl_alert_deliveries_total", endpoint="ops", outcome="delivered")
            assert delivered == 1.0
            assert monitor.metric(
                "aoetl_alert_delivery_attempts_total", endpoint="ops", outcome="retry_status"
            )
        finally:
            assert monitor.stop() == 0

        # Restarted after the delivery: the next failure is delivered, the first one never again.
        monitor = stack.monitor("monitor-3")
        try:
            fail(stack, second)
            monitor.wait(lambda: len(receiver.accepted()) == 2, "the second alert's delivery")
            (later,) = [a for a in reader.read() if a.run_id == second]
            assert [d.answered for d in receiver.of(later.alert_id)] == [200]
            assert [d.answered for d in receiver.of(alert.alert_id)] == [503, 503, 200]
            assert len(receiver.deliveries) == 4
            log = (stack.logs / "monitor-3.log").read_text() + (stack.logs / "monitor-2.log").read_text()
            assert receiver.url not in log and "c2VjcmV0" not in log  # neither the URL nor the secret
        finally:
            monitor.stop()
            reader.close()


def dead_letters(stack: Stack) -> list[DeadLetter]:
    """Everything on the dead-letters topic (every partition), from the beginning."""
    topic = stack.topic(Topics.DEAD_LETTERS)
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"dl-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        letters = []
        while (msg := consumer.poll(1.0)) is not None:
            assert msg.error() is None, msg.error()
            letters.append(AvroSerde().decode(msg.value() or b"", DeadLetter))
        return letters
    finally:
        consumer.close()


def test_an_alert_that_exhausts_its_retries_is_a_dead_letter_not_retried_after_a_restart_and_replayable(
    stack: Stack,
) -> None:
    with (
        alert_receiver((503, {}), (503, {})) as receiver,  # then 200 for whatever comes next
        alert_receiver() as audit,  # another endpoint, that takes everything at once
    ):
        routed(stack, receiver, audit)
        stack.env["AOETL_ALERT_ROUTING_MAX_ATTEMPTS"] = "2"
        first, second = uuid.uuid4().hex, uuid.uuid4().hex
        reader = AlertReader(stack.bootstrap, stack.topic(Topics.ALERTS))
        monitor = stack.monitor("monitor-1")
        try:
            fail(stack, first)
            labels = {"stage": "monitor", "error_class": "AlertDeliveryExhausted"}
            # the monitor reads its own dead letter back and counts it with every other stage's
            monitor.wait(lambda: monitor.metric("aoetl_dead_letters_total", **labels) == 1.0, "the count")
            (alert,) = [a for a in reader.read() if a.run_id == first]
            assert [d.answered for d in receiver.of(alert.alert_id)] == [503, 503]
            assert monitor.metric("aoetl_alert_deliveries_total", endpoint="ops", outcome="exhausted") == 1.0
            (letter,) = wait_until(lambda: dead_letters(stack) or None, timeout=30, message="the dead letter")
            assert (letter.stage, letter.run_id, letter.error.error_class) == (
                Stage.MONITOR, first, "AlertDeliveryExhausted"
            )  # fmt: skip
            assert letter.origin.topic == stack.topic(Topics.ALERTS)
            assert AvroSerde().decode(letter.payload, Alert) == alert  # the alert itself, from its record
            assert "2 attempts, the last one got retry_status (HTTP 503)" in letter.error.message
            assert receiver.url not in letter.model_dump_json(exclude={"payload"})
            assert receiver.url.encode() not in letter.payload
            assert letter.recipient == "ops"
            assert [d.answered for d in audit.of(alert.alert_id)] == [200]  # the other endpoint's
        finally:
            assert monitor.stop() == 0

        # Committed after its dead letter: a restarted monitor delivers the next alert, never this one.
        # Its replay goes to "ops" alone, before the next alert (one partition: each route reads in order).
        monitor = stack.monitor("monitor-2")
        try:
            env = {k: v for k, v in stack.env.items() if k.startswith(("KAFKA_", "AOETL_TOPIC"))}
            replayed = CliRunner().invoke(
                app, ["dlq", "replay", "--id", letter.dead_letter_id, "-y"], env=env
            )
            assert replayed.exit_code == 0, replayed.output
            fail(stack, second)
            monitor.wait(lambda: len(receiver.accepted()) == 2, "the replay's and the second alert's")
            monitor.wait(lambda: len(audit.accepted()) == 2, "the second alert's delivery to audit")
            assert [d.answered for d in receiver.of(alert.alert_id)] == [503, 503]
            (again,) = receiver.of(letter.dead_letter_id)  # the replay, under the letter's id
            verify_standard(again.body, again.headers, [SECRET])
            assert again.json()["data"]["alert_id"] == alert.alert_id
            assert audit.of(letter.dead_letter_id) == [] and len(audit.deliveries) == 2
            assert [letter.run_id for letter in dead_letters(stack)] == [first]
        finally:
            monitor.stop()
            reader.close()
