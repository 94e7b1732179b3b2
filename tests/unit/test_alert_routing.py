"""The alert router's delivery, without a broker: HTTP through httpx's mock transport (a fake receiver
behind httpx's own transport interface), signatures checked by the project's own verifier."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from services.monitor.routing.bodies import render, slack_body
from services.monitor.routing.delivery import Deliverer, Outcome, _BackoffWait, retry_after_seconds
from services.monitor.routing.settings import AlertEndpoint, AlertRoutingSettings, SecretRef
from shared.contracts import Alert, AlertKind, Severity, utcnow
from shared.errors import ConfigurationError
from shared.webhooks.signatures import verify_standard

pytestmark = pytest.mark.unit

URL = "https://hooks.example.com/services/T000/B000/very-secret-token"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_URL", URL)
    monkeypatch.setenv("ALERT_SECRET", SECRET)


def alert(**kw: object) -> Alert:
    fields: dict[str, object] = {
        "kind": AlertKind.RUN_FAILED,
        "severity": Severity.CRITICAL,
        "message": "run r1 of orders FAILED: <boom> & more",
        "run_id": "r1",
        "pipeline": "orders",
        "tenant": "acme",
    }
    return Alert(**{**fields, **kw})  # type: ignore[arg-type]


def endpoint(**kw: object) -> AlertEndpoint:
    base: dict[str, object] = {"url": SecretRef(env="ALERT_URL"), "secret": SecretRef(env="ALERT_SECRET")}
    return AlertEndpoint(**{**base, **kw})  # type: ignore[arg-type]


def routing(**kw: object) -> AlertRoutingSettings:
    base: dict[str, object] = {"initial_backoff_s": 0.5, "max_backoff_s": 8.0, "max_attempts": 5}
    return AlertRoutingSettings(**{**base, **kw})  # type: ignore[arg-type]


class Receiver:
    """Answers each request with the next of ``answers`` (a status, or an exception to raise)."""

    def __init__(self, *answers: int | Exception | Callable[[], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer()
        return httpx.Response(answer)


def deliverer(receiver: Receiver, settings: AlertRoutingSettings | None = None, **kw: object):
    sleeps: list[float] = []
    made = Deliverer(
        str(kw.pop("name", "ops")),
        kw.pop("ep", None) or endpoint(),  # type: ignore[arg-type]
        settings or routing(),
        threading.Event(),
        rng=random.Random(7),
        transport=httpx.MockTransport(receiver),
    )
    made._sleep = sleeps.append  # type: ignore[method-assign]
    return made, sleeps


def test_5xx_twice_then_2xx_is_delivered_once_with_a_signature_the_gateway_verifier_accepts() -> None:
    receiver = Receiver(503, 502, 200)
    sender, sleeps = deliverer(receiver)
    sent = alert()
    assert sender.deliver(sent) is Outcome.DELIVERED
    assert len(receiver.requests) == 3 and len(sleeps) == 2
    for request in receiver.requests:
        assert request.headers["webhook-id"] == sent.alert_id  # receivers dedupe by it
        verify_standard(request.content, dict(request.headers), [SECRET])
    assert json.loads(receiver.requests[-1].content)["data"]["alert_id"] == sent.alert_id


def test_a_4xx_is_terminal_and_not_retried() -> None:
    for status in (400, 401, 404, 410, 422, 301):
        receiver = Receiver(status, 200)
        sender, sleeps = deliverer(receiver)
        assert sender.deliver(alert()) is Outcome.REJECTED, status
        assert (len(receiver.requests), sleeps) == (1, [])


def test_429_and_503_are_retried_after_their_retry_after_capped_by_the_maximum_wait() -> None:
    receiver = Receiver(
        lambda: httpx.Response(429, headers={"Retry-After": "3"}),
        lambda: httpx.Response(429, headers={"Retry-After": "3600"}),
        lambda: httpx.Response(503, headers={"Retry-After": "5"}),
        200,
    )
    sender, sleeps = deliverer(receiver)
    assert sender.deliver(alert()) is Outcome.DELIVERED
    assert sleeps == [3.0, 8.0, 5.0]


def test_timeouts_and_connection_errors_are_retried_until_the_attempts_run_out() -> None:
    receiver = Receiver(
        httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), 500, httpx.RemoteProtocolError("x"), 503
    )
    sender, sleeps = deliverer(receiver)
    assert sender.deliver(alert()) is Outcome.EXHAUSTED
    assert len(receiver.requests) == 5 and len(sleeps) == 4


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    wait = _BackoffWait(routing(), random.Random(1))
    assert [wait.bound(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]

    class State:
        outcome = None

        def __init__(self, n: int):
            self.attempt_number = n

    draws = [wait(State(n)) for n in range(1, 7) for _ in range(50)]  # type: ignore[arg-type]
    assert all(0 <= d <= 8.0 for d in draws)
    assert len({round(d, 6) for d in draws}) > 250  # jittered, not a fixed schedule
    assert max(wait(State(1)) for _ in range(200)) <= 0.5  # type: ignore[arg-type]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("12", 0) == 12.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_seconds("soon", 0) is None and retry_after_seconds(None, 0) is None


def test_a_stop_request_interrupts_the_retries_without_a_terminal_outcome() -> None:
    receiver = Receiver(503, 503, 200)
    stop = threading.Event()
    sender = Deliverer("ops", endpoint(), routing(), stop, transport=httpx.MockTransport(receiver))
    sender._sleep = lambda seconds: stop.set()  # type: ignore[method-assign]
    assert sender.deliver(alert()) is Outcome.INTERRUPTED
    assert len(receiver.requests) == 1


def test_metadata_and_loopback_endpoints_are_refused_unless_allow_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for url in ("http://169.254.169.254/latest/meta-data", "http://127.0.0.1:9/x", "http://[::1]/x"):
        monkeypatch.setenv("ALERT_URL", url)
        receiver = Receiver(200)
        sender, _ = deliverer(receiver)
        assert sender.deliver(alert()) is Outcome.REFUSED, url
        assert receiver.requests == []
    monkeypatch.setenv("ALERT_URL", "http://127.0.0.1:9/x")
    receiver = Receiver(200)
    sender, _ = deliverer(receiver, routing(egress_allow=["127.0.0.1:9"]))
    assert sender.deliver(alert()) is Outcome.DELIVERED


def test_the_real_egress_client_refuses_a_name_that_resolves_to_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERT_URL", "http://localtest.invalid.:9/x")
    monkeypatch.setattr(
        "socket.getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("127.0.0.1", 9))]
    )  # a DNS answer pointing at loopback
    sender = Deliverer("ops", endpoint(), routing(max_attempts=1), threading.Event())
    assert sender.deliver(alert()) is Outcome.REFUSED


def test_no_log_line_shows_the_url_or_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sender, _ = deliverer(Receiver(httpx.ConnectError(f"cannot reach {URL}"), 503, 200))
    assert sender.deliver(alert()) is Outcome.DELIVERED
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("services.monitor.routing")]
    assert len(lines) == 3 and all("ops" in line for line in lines)
    assert not any("very-secret-token" in line or SECRET in line for line in lines)
    attempts = [r for r in caplog.records if getattr(r, "attempt", None)]
    assert [(r.attempt, r.outcome) for r in attempts] == [  # type: ignore[attr-defined]
        (1, "connection_error"), (2, "retry_status"), (3, "delivered")
    ]  # fmt: skip


def test_a_missing_secret_is_misconfigured_and_names_the_variable_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALERT_SECRET")
    receiver = Receiver(200)
    sender, _ = deliverer(receiver)
    assert sender.deliver(alert()) is Outcome.MISCONFIGURED
    assert receiver.requests == []
    with pytest.raises(ConfigurationError, match="ALERT_SECRET"):
        SecretRef(env="ALERT_SECRET").read("x")


def test_stale_alerts_are_not_delivered() -> None:
    receiver = Receiver(200)
    sender, _ = deliverer(receiver, routing(max_alert_age_s=60))
    assert sender.deliver(alert(at=utcnow() - timedelta(minutes=5))) is Outcome.STALE
    assert receiver.requests == []


def test_the_slack_body_has_text_and_blocks_and_escapes_mrkdwn() -> None:
    body = slack_body(alert())
    assert set(body) == {"text", "blocks"}
    assert "&lt;boom&gt; &amp; more" in body["text"] and "<boom>" not in json.dumps(body)
    header, section, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "CRITICAL RUN_FAILED — orders"},
    }
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert context["type"] == "context" and "run `r1`" in context["elements"][0]["text"]
    long = slack_body(alert(message="x" * 5000, pipeline="p" * 200))
    assert len(long["blocks"][0]["text"]["text"]) <= 150 and len(long["blocks"][1]["text"]["text"]) <= 3000


def test_the_json_body_is_the_standard_webhooks_shape() -> None:
    sent = alert()
    body = json.loads(render(sent, "json"))
    assert body["type"] == "aoetl.alert.run_failed"
    assert body["data"] == json.loads(sent.model_dump_json())


def test_filters_by_severity_tenant_pipeline_and_kind() -> None:
    everything = endpoint()
    assert everything.wants(alert())
    assert not endpoint(min_severity="CRITICAL").wants(alert(severity=Severity.WARNING))
    assert endpoint(min_severity="WARNING").wants(alert(severity=Severity.CRITICAL))
    assert not endpoint(tenants=["other"]).wants(alert())
    assert endpoint(tenants=["acme"]).wants(alert())
    assert endpoint(pipelines=["ord*"]).wants(alert()) and not endpoint(pipelines=["sales"]).wants(alert())
    assert not endpoint(pipelines=["*"]).wants(alert(pipeline=None))
    assert not endpoint(kinds=["RUN_STUCK"]).wants(alert())
    assert endpoint(kinds=["RUN_STUCK", "RUN_FAILED"]).wants(alert())


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AOETL_ALERT_ROUTING_ENDPOINTS",
        json.dumps({"ops-slack": {"url": {"env": "ALERT_URL"}, "format": "slack", "kinds": ["RUN_FAILED"]}}),
    )
    monkeypatch.setenv("AOETL_ALERT_ROUTING_EGRESS_ALLOW", "10.0.0.0/8, alerts.internal:8443")
    settings = AlertRoutingSettings()
    assert settings.endpoints["ops-slack"].format == "slack"
    assert settings.egress_allow == ["10.0.0.0/8", "alerts.internal:8443"]
    monkeypatch.setenv("AOETL_ALERT_ROUTING_ENDPOINTS", json.dumps({"Bad Name": {"url": {"env": "X"}}}))
    with pytest.raises(ValueError):
        AlertRoutingSettings()
    monkeypatch.setenv("ALERT_SECRET", "not-base64!")
    monkeypatch.setenv(
        "AOETL_ALERT_ROUTING_ENDPOINTS",
        json.dumps({"ops": {"url": {"env": "X"}, "secret": {"env": "ALERT_SECRET"}}}),
    )
    with pytest.raises(ValueError, match="whsec_"):
        AlertRoutingSettings()
