"""Gateway metrics (on the shared default registry, next to the ``aoetl_*`` metrics of every service), and
``HttpMetrics``, the ASGI middleware that counts and times every HTTP request.

HTTP series are labelled by route *template* (``/runs/{run_id}``), method and status class (``2xx``),
never by the raw path: a path carries ids and whatever a client sends, and a label of it would grow a
series per request. A request that matches no route is ``route="unmatched"``; a method outside the
standard ones is ``method="other"``. So the label sets are bounded by the routes the code declares.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEBHOOKS = Counter(
    "aoetl_gateway_webhooks",
    "Webhook deliveries by source and outcome "
    "(accepted|duplicate|ignored|replayed|bad_signature|bad_payload|too_large|unavailable|unknown_source)",
    ["source", "outcome"],
)
PUBLISH_SECONDS = Histogram(
    "aoetl_gateway_publish_seconds",
    "From send to Kafka acknowledgement of one gateway record",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBLISH_FAILURES = Counter(
    "aoetl_gateway_publish_failures", "Records Kafka did not acknowledge in time (answered 503)", ["topic"]
)
API_AUTH = Counter(
    "aoetl_gateway_api_auth",
    "API calls refused before reaching their endpoint, by reason "
    "(unauthenticated|forbidden|rate_limited|unverifiable|too_large)",
    ["reason"],
)
AUDIT_RECORDS = Counter(
    "aoetl_gateway_audit_records", "Audit records written, by outcome (and failed writes)", ["outcome"]
)
HTTP_REQUESTS = Counter(
    "aoetl_gateway_http_requests",
    "HTTP requests answered, by route template, method and status class (2xx|3xx|4xx|5xx)",
    ["route", "method", "status_class"],
)
HTTP_SECONDS = Histogram(
    "aoetl_gateway_http_request_duration_seconds",
    "From a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The path template of the route that serves (or would serve, but for its method) this request.

    Matched here rather than read from the routing's scope, because a middleware may answer before any
    route runs (the body limit's 413), and such an answer still belongs to its route."""
    app = scope.get("app")
    partial: str | None = None
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(route.path)
        if match is Match.PARTIAL and partial is None:
            partial = str(route.path)  # the path matches, the method does not (405)
    return partial or UNMATCHED


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class HttpMetrics:
    """Counts and times every HTTP request (install outermost, so every answer is seen; an exception that
    escapes the app is counted as the 500 that Starlette's error middleware answers with)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Matched before the app runs: routing rewrites the scope (a mount's root_path, for one).
        method = scope.get("method", "")
        route, method = route_template(scope), method if method in METHODS else "other"
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            HTTP_REQUESTS.labels(route, method, status_class(status)).inc()
            HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)
