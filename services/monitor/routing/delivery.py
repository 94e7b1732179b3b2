"""One alert to one endpoint: signed, retried, observed.

Signing (Standard Webhooks): ``webhook-id`` is the alert's id, so a receiver that dedupes by it (as the
specification asks receivers to) sees every redelivery of an alert as the same message (a replay of an
exhausted delivery has the dead letter's id instead: ``services.monitor.routing.dead_letters``);
``webhook-timestamp`` is the attempt's time and ``webhook-signature`` the ``v1`` HMAC over
``"{id}.{timestamp}.{body}"``, made by ``shared.webhooks.signatures.sign_standard``, the primitive the
gateway verifies its own inbound webhooks with. An endpoint without a secret gets the id and no signature
(Slack incoming webhooks verify nothing).

Retries (tenacity): an attempt is *retryable* on a 5xx, a 429, a timeout or a connection error; every
other answer is terminal: 2xx delivered, any other 4xx (and a 3xx, which is not followed: a redirect
could lead anywhere) rejected. Waits grow exponentially from ``initial_backoff_s`` with full jitter (a
random wait between 0 and the exponential bound, so receivers that come back are not hit by every
sender at once), capped at ``max_backoff_s``; a 429's or 5xx's ``Retry-After`` (seconds or an HTTP date)
is honoured, within the same cap. After ``max_attempts`` attempts or ``max_elapsed_s`` the alert is
``exhausted``. A stop request ends the waits at once and returns ``interrupted``: not a terminal
outcome, the router does not commit it and the next owner of the partition delivers it.

Egress: every connection goes through ``shared.policy.egress`` (the address-pinning transport), with the
router's own allow list; a refused address is terminal (``refused``). Nothing here logs or raises the URL
or a secret: the endpoint's name stands for both.

Observability, per attempt: ``aoetl_alert_delivery_attempts_total{endpoint,outcome}``, its duration in
``aoetl_alert_delivery_attempt_seconds{endpoint,outcome}``, and one structured log line (endpoint, alert
id, attempt, outcome, HTTP status, duration); per alert, the terminal outcome in
``aoetl_alert_deliveries_total{endpoint,outcome}``. Labels are bounded: endpoint names come from the
operator's configuration, outcomes from this module. An ``exhausted`` alert is also dead-lettered by the
router (``services.monitor.routing.dead_letters``).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx
from prometheus_client import Counter, Histogram
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
)

from services.monitor.routing.bodies import render
from services.monitor.routing.settings import AlertEndpoint, AlertRoutingSettings
from shared.contracts import Alert
from shared.errors import ConfigurationError
from shared.policy.egress import EgressPolicy, EgressRefusedError, egress_client
from shared.webhooks.headers import STANDARD_ID
from shared.webhooks.signatures import sign_standard

_log = logging.getLogger(__name__)

ATTEMPTS = Counter(
    "aoetl_alert_delivery_attempts", "HTTP attempts to deliver an alert, by endpoint and outcome",
    ["endpoint", "outcome"],
)  # fmt: skip
ATTEMPT_SECONDS = Histogram(
    "aoetl_alert_delivery_attempt_seconds",
    "Duration of one alert delivery attempt, by endpoint and outcome",
    ["endpoint", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DELIVERIES = Counter(
    "aoetl_alert_deliveries",
    "Alerts an endpoint was meant to get, by the final outcome (delivered, rejected, refused, exhausted,"
    " misconfigured, stale, interrupted)",
    ["endpoint", "outcome"],
)


class Outcome(StrEnum):
    # attempts
    DELIVERED = "delivered"  # 2xx
    REJECTED = "rejected"  # 4xx other than 429, or a redirect: terminal
    RETRY_STATUS = "retry_status"  # 5xx or 429
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    REFUSED = "refused"  # the egress policy refused the address: terminal
    MISCONFIGURED = "misconfigured"  # the URL or secret cannot be read: terminal for this alert
    # of a whole delivery only
    EXHAUSTED = "exhausted"
    STALE = "stale"
    INTERRUPTED = "interrupted"


RETRYABLE = frozenset({Outcome.RETRY_STATUS, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR})


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    status: int | None = None
    retry_after_s: float | None = None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header as seconds from ``now``: delta-seconds or an HTTP date; None if absent or
    unreadable (the exponential wait applies then)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def classify(response: httpx.Response, now: float) -> Attempt:
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(Outcome.DELIVERED, code)
    if code == 429 or code >= 500:  # Retry-After is defined for both (RFC 9110, 10.2.3)
        return Attempt(
            Outcome.RETRY_STATUS, code, retry_after_seconds(response.headers.get("retry-after"), now)
        )
    return Attempt(Outcome.REJECTED, code)


class _BackoffWait:
    """tenacity wait: Retry-After when the receiver gave one, else exponential with full jitter; capped.
    The jitter is tenacity's ``wait_random_exponential`` formula, drawn from our own ``Random`` so that
    tests can seed it."""

    def __init__(self, settings: AlertRoutingSettings, rng: random.Random):
        self._initial = settings.initial_backoff_s
        self._cap = settings.max_backoff_s
        self._rng = rng

    def bound(self, attempt_number: int) -> float:
        """The longest wait after attempt ``attempt_number`` (1, 2, ...)."""
        return min(self._cap, self._initial * 2 ** (attempt_number - 1))

    def __call__(self, state: RetryCallState) -> float:
        last = state.outcome.result() if state.outcome is not None and not state.outcome.failed else None
        if isinstance(last, Attempt) and last.retry_after_s is not None:
            return min(last.retry_after_s, self._cap)
        return self._rng.uniform(0, self.bound(state.attempt_number))


Clock = Callable[[], float]


class Deliverer:
    """Delivers alerts to one endpoint over one egress-checked HTTP client. Not thread-safe: one per
    endpoint thread. ``close`` it."""

    def __init__(
        self,
        name: str,
        endpoint: AlertEndpoint,
        settings: AlertRoutingSettings,
        stop: threading.Event,
        *,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.name = name
        self.endpoint = endpoint
        self.settings = settings
        self._stop = stop
        self._clock = clock
        self._wait = _BackoffWait(settings, rng or random.Random())
        timeout = httpx.Timeout(endpoint.timeout_s)
        self._egress = EgressPolicy(
            settings.egress_allow, subject="alert endpoints", allow_env="AOETL_ALERT_ROUTING_EGRESS_ALLOW"
        )
        if transport is None:  # the production path: every connection checked and pinned
            self._client = egress_client(self._egress, timeout=timeout)
        else:  # tests: a mock transport (the egress check of the URL still applies, below)
            self._client = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        self._attempt_number = 0  # per alert
        self.last_attempt: Attempt | None = None  # of the latest alert: what an exhausted one last got

    @property
    def attempts(self) -> int:
        """HTTP attempts made for the latest alert."""
        return self._attempt_number

    def close(self) -> None:
        self._client.close()

    def deliver(
        self, alert: Alert, *, webhook_id: str | None = None, sent_at: float | None = None
    ) -> Outcome:
        """Deliver ``alert`` until a terminal outcome (or a stop request: ``INTERRUPTED``). A replay
        (``services.monitor.routing.dead_letters``) has its own ``webhook_id`` (default: the alert's id)
        and is as old as its record (``sent_at``, epoch seconds; default: the alert's time)."""
        outcome = self._deliver(alert, webhook_id or alert.alert_id, sent_at)
        DELIVERIES.labels(self.name, outcome.value).inc()
        return outcome

    def _deliver(self, alert: Alert, webhook_id: str, sent_at: float | None) -> Outcome:
        self._attempt_number, self.last_attempt = 0, None
        age = self._clock() - (sent_at if sent_at is not None else alert.at.timestamp())
        if age > self.settings.max_alert_age_s:
            _log.info(
                "alert %s not delivered to %s: %.0f s old",
                alert.alert_id, self.name, age, extra=self._fields(alert, Outcome.STALE),
            )  # fmt: skip
            return Outcome.STALE
        try:
            url = self.endpoint.url.read(f"alert endpoint {self.name!r} url")
            secret = (
                self.endpoint.secret.read(f"alert endpoint {self.name!r} secret")
                if self.endpoint.secret
                else None
            )
        except ConfigurationError as exc:  # the message says where the value should be, never the value
            _log.error("%s", exc, extra=self._fields(alert, Outcome.MISCONFIGURED))
            return Outcome.MISCONFIGURED
        why = self._egress.check_url(url)
        if why is not None:
            self._record(alert, 1, Attempt(Outcome.REFUSED), 0.0, detail=why)
            return Outcome.REFUSED
        body = render(alert, self.endpoint.format)
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts)
            | stop_after_delay(self.settings.max_elapsed_s)
            | stop_when_event_set(self._stop),
            wait=self._wait,
            retry=retry_if_result(lambda attempt: attempt.outcome in RETRYABLE),
            sleep=self._sleep,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        last = self.last_attempt = retrying(self._attempt, alert, webhook_id, url, secret, body)
        if last.outcome in RETRYABLE:
            return Outcome.INTERRUPTED if self._stop.is_set() else Outcome.EXHAUSTED
        return last.outcome

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a stop request ends the wait; the stop condition then ends the retries

    def _attempt(self, alert: Alert, webhook_id: str, url: str, secret: str | None, body: bytes) -> Attempt:
        if self._attempt_number > 0 and self._stop.is_set():
            return Attempt(Outcome.INTERRUPTED)  # asked to stop during the wait: no further attempt
        self._attempt_number += 1
        number = self._attempt_number
        now = self._clock()
        headers = {"content-type": "application/json", "user-agent": "aoetl-alert-router"}
        if secret is not None:
            headers.update(sign_standard(body, secret, msg_id=webhook_id, timestamp=int(now)))
        else:
            headers[STANDARD_ID] = webhook_id
        started = time.monotonic()
        detail = ""
        try:
            response = self._client.post(url, content=body, headers=headers)
            attempt = classify(response, self._clock())
        except EgressRefusedError as exc:
            attempt, detail = Attempt(Outcome.REFUSED), str(exc)
        except httpx.InvalidURL:  # the configured value is not a URL httpx can send to: fix the secret
            attempt = Attempt(Outcome.MISCONFIGURED)
        except httpx.TimeoutException as exc:
            attempt, detail = Attempt(Outcome.TIMEOUT), type(exc).__name__
        except httpx.TransportError as exc:  # connect, read, write, protocol: worth another try
            attempt, detail = Attempt(Outcome.CONNECTION_ERROR), type(exc).__name__
        self._record(alert, number, attempt, time.monotonic() - started, detail=detail)
        return attempt

    def _record(
        self, alert: Alert, number: int, attempt: Attempt, seconds: float, *, detail: str = ""
    ) -> None:
        ATTEMPTS.labels(self.name, attempt.outcome.value).inc()
        ATTEMPT_SECONDS.labels(self.name, attempt.outcome.value).observe(seconds)
        fields = self._fields(alert, attempt.outcome)
        fields.update(attempt=number, http_status=attempt.status, duration_ms=round(seconds * 1000))
        level = logging.INFO if attempt.outcome is Outcome.DELIVERED else logging.WARNING
        _log.log(
            level,
            "alert %s to %s, attempt %d: %s%s%s",
            alert.alert_id,
            self.name,
            number,
            attempt.outcome.value,
            f" (HTTP {attempt.status})" if attempt.status is not None else "",
            f": {detail}" if detail else "",
            extra=fields,
        )

    def _fields(self, alert: Alert, outcome: Outcome) -> dict[str, object]:
        return {"endpoint": self.name, "alert_id": alert.alert_id, "outcome": outcome.value}
