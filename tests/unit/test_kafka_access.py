"""The start-up access check (shared.kafka.access): a refused password or certificate is a configuration
error at once, an ACL that does not cover a needed topic too, a silent broker a transient error; and the
service runtime exits 2 on the first. (The secure end-to-end suite provokes each refusal on a real broker.)"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from aoetl.devstack.osproc import free_port
from shared.kafka import access
from shared.kafka.access import KafkaAccessDeniedError, KafkaUnreachableError, check_access
from shared.kafka.clients import KafkaClients
from shared.settings import KafkaSettings

pytestmark = pytest.mark.unit

SCRAM = KafkaSettings(
    bootstrap_servers="127.0.0.1:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="transform",
    sasl_password="s3cr3t-never-shown",
)


class FakeAdmin:
    """Answers like librdkafka's admin client: connection errors reach ``error_cb`` from ``poll``."""

    def __init__(self, error_cb: Any, *, errors: list[KafkaError], answers: bool, topic_error: int | None):
        self._error_cb, self._errors, self._answers, self._topic_error = (
            error_cb,
            errors,
            answers,
            topic_error,
        )

    def list_topics(self, timeout: float) -> object:
        if not self._answers:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
        return object()

    def poll(self, _timeout: float) -> int:
        for error in self._errors:
            self._error_cb(error)
        self._errors = []
        return 0

    def describe_topics(self, topics: Any, request_timeout: float) -> dict[str, Future[object]]:
        futures: dict[str, Future[object]] = {}
        for name in topics.topic_names:
            future: Future[object] = Future()
            if self._topic_error is None:
                future.set_result(object())
            else:
                future.set_exception(KafkaException(KafkaError(self._topic_error, "Broker: refused")))
            futures[name] = future
        return futures


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def install(
        *, errors: tuple[KafkaError, ...] = (), answers: bool = True, topic_error: int | None = None
    ) -> None:
        def admin(self: KafkaClients, **overrides: Any) -> FakeAdmin:
            return FakeAdmin(
                overrides["error_cb"], errors=list(errors), answers=answers, topic_error=topic_error
            )

        monkeypatch.setattr(access.KafkaClients, "admin", admin)

    return install


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed"),
        (KafkaError._SSL, "SSL handshake failed: certificate verify failed"),
    ],
)
def test_a_refused_identity_is_a_configuration_error_at_once(fake_admin, code: int, words: str) -> None:  # type: ignore[no-untyped-def]
    fake_admin(errors=[KafkaError(code, words)], answers=False)
    started = time.monotonic()
    with pytest.raises(KafkaAccessDeniedError) as refused:
        check_access(SCRAM, timeout=30)
    assert time.monotonic() - started < 5, "no waiting for a broker that will never accept us"
    message = str(refused.value)
    assert "refused user 'transform' (SCRAM-SHA-512 over SASL_SSL)" in message and words in message
    assert "s3cr3t-never-shown" not in message
    assert refused.value.transient is False


def test_a_topic_the_acls_do_not_cover_is_a_configuration_error(fake_admin) -> None:  # type: ignore[no-untyped-def]
    fake_admin(topic_error=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(
        KafkaAccessDeniedError, match=r"does not authorize user 'transform'.*'aoetl.schemas.x'"
    ):
        check_access(SCRAM, ["aoetl.schemas.x"])


def test_a_topic_not_created_yet_is_no_access_problem(fake_admin) -> None:  # type: ignore[no-untyped-def]
    fake_admin(topic_error=KafkaError.UNKNOWN_TOPIC_OR_PART)
    check_access(SCRAM, ["aoetl.schemas"])


def test_a_broker_that_answers_is_accepted(fake_admin) -> None:  # type: ignore[no-untyped-def]
    fake_admin(errors=[KafkaError(KafkaError._TRANSPORT, "one reconnect")])
    check_access(SCRAM, ["aoetl.schemas"])


def test_no_broker_at_all_is_transient() -> None:
    nobody = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(KafkaUnreachableError) as unreachable:
        check_access(nobody, timeout=1.5)
    assert time.monotonic() - started < 10
    assert unreachable.value.transient is True


def test_the_runtime_exits_2_when_kafka_refuses_the_service(fake_admin) -> None:  # type: ignore[no-untyped-def]
    from shared.contracts import Stage
    from shared.runtime import EXIT_BAD_CONFIGURATION, BaseService, _publish_and_run
    from shared.settings import ServiceSettings
    from shared.signals import GracefulShutdown

    class Refused(BaseService[ServiceSettings]):
        name, stage, settings_class = "transform", Stage.TRANSFORM, ServiceSettings

        def run(self, shutdown: GracefulShutdown) -> None:
            raise AssertionError("a service Kafka refuses must not start its work")

    fake_admin(errors=[KafkaError(KafkaError._AUTHENTICATION, "Authentication failed")], answers=False)
    service = Refused(ServiceSettings(kafka=SCRAM), serde=object())  # type: ignore[arg-type]
    assert _publish_and_run(service, GracefulShutdown()) == EXIT_BAD_CONFIGURATION
