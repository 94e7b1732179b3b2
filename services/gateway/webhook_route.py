"""``POST /webhooks/{source}``: from a signed delivery to its answer (``answer_webhook``), and the short way
there (``WebhookFastPath``).

``answer_webhook`` is the endpoint: verify the signature, read the delivery, accept it
(``services.gateway.acceptance``), answer 202 when a run was requested, 200 for a replay or when no trigger
rule matched; every outcome is counted in ``aoetl_gateway_webhooks``. The app's route calls it, and so does
the fast path.

``WebhookFastPath`` wraps the app's whole middleware stack (installed by ``install_fast_path`` when tracing
is off) and hands every ``POST /webhooks/<source name>`` straight to ``answer_webhook``, past Starlette's and
FastAPI's middleware, routing and dependency solving: those took as much CPU per delivery as the delivery's
own work (signature, Avro encoding, acceptance), and at hundreds of deliveries a second on a full core every
request in flight waits for the others' CPU. The answer is the one the app's way gives, because nothing
on that way applies to a webhook beyond what the fast path does itself:

* the access guard asks nothing of a webhook (its rule is ``signed``: the endpoint checks the signature),
  and ``limits.BodyLimit`` leaves webhook paths to the endpoint's own limit (``read_limited_body``);
* an ``HTTPException`` is rendered by FastAPI's own default handler (the console's handler defers to it
  outside ``/ui``), an unexpected exception becomes Starlette's plain ``500 Internal Server Error`` and is
  raised on to the server, which logs it;
* the answer carries ``X-Request-Id`` (``limits.RequestId``) and is counted and timed under the route's
  template (``metrics.HttpMetrics``).

Anything else takes the app's way: another method or path, a source name the route's pattern refuses (the
app answers 422), a mounted app (a ``root_path``), and every request while tracing is on (the OpenTelemetry
instrumentation wraps the app's own stack, and its span per request must not be skipped).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.core import Gateway
from services.gateway.exceptions import GatewayTransientError, PayloadError, ReplayRefusedError, unavailable
from services.gateway.limits import REQUEST_ID_HEADER, read_limited_body
from services.gateway.metrics import HTTP_REQUESTS, HTTP_SECONDS, WEBHOOKS, status_class
from shared.auth.audit import request_id_from
from shared.webhooks.signatures import SignatureError

_log = logging.getLogger("services.gateway.app")

SOURCE_NAME = r"^[A-Za-z0-9_\-]{1,64}$"
ROUTE = "/webhooks/{source}"
_PREFIX = "/webhooks/"
_SOURCE = re.compile(SOURCE_NAME[1:-1])  # fullmatch: "$" would let a trailing newline through
_REQUEST_ID = REQUEST_ID_HEADER.encode()

Answer = Callable[[str, Request], Awaitable[Response]]


async def answer_webhook(
    gateway: Gateway, source: str, request: Request, require_ready: Callable[[], None]
) -> Response:
    """The webhook endpoint; refusals are ``HTTPException`` s (``require_ready`` raises the 503 of a
    gateway not caught up yet)."""
    config = gateway.source(source)
    if config is None:
        WEBHOOKS.labels("-", "unknown_source").inc()
        raise HTTPException(404, detail=f"no webhook source named {source!r}")
    try:
        body = await read_limited_body(request, gateway.settings.max_body_bytes)
    except HTTPException:
        WEBHOOKS.labels(source, "too_large").inc()
        raise
    try:
        delivery = gateway.read_delivery(source, config, body, request.headers)
    except SignatureError as exc:
        WEBHOOKS.labels(source, "bad_signature").inc()
        _log.warning("webhook %s rejected (%s): %s", source, exc.reason, exc)
        raise HTTPException(401, detail=f"signature rejected: {exc.reason}") from exc
    except PayloadError as exc:
        WEBHOOKS.labels(source, "bad_payload").inc()
        raise HTTPException(400, detail=str(exc)) from exc
    try:
        require_ready()
        answer = await gateway.accept(delivery)
    except ReplayRefusedError as exc:
        WEBHOOKS.labels(source, "replayed").inc()
        _log.warning("webhook %s refused: %s", source, exc)
        raise HTTPException(409, detail=str(exc)) from exc
    except GatewayTransientError as exc:
        WEBHOOKS.labels(source, "unavailable").inc()
        raise unavailable(exc) from exc
    except HTTPException:
        WEBHOOKS.labels(source, "unavailable").inc()
        raise
    outcome = "accepted" if answer.published else ("duplicate" if answer.duplicate else "ignored")
    WEBHOOKS.labels(source, outcome).inc()
    # pydantic's own JSON (the same compact form JSONResponse writes), without a dict in between
    return Response(
        answer.model_dump_json(), status_code=202 if answer.published else 200, media_type="application/json"
    )


class WebhookFastPath:
    """ASGI: ``POST /webhooks/<source name>`` to ``answer``, everything else to ``app`` (module docstring)."""

    def __init__(self, app: ASGIApp, answer: Answer):
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = _webhook_source(scope)
        if source is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request = Request(scope, receive)
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        response: Response | None = None
        try:
            try:
                response = await self.answer(source, request)
            except HTTPException as exc:
                response = await http_exception_handler(request, exc)
            response.headers[REQUEST_ID_HEADER] = request_id
            status = response.status_code
            await response(scope, receive, send)
        except Exception:
            if response is None:  # nothing sent yet: Starlette's answer to an error (without a request id)
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        finally:
            HTTP_REQUESTS.labels(ROUTE, "POST", status_class(status)).inc()
            HTTP_SECONDS.labels(ROUTE, "POST").observe(time.perf_counter() - started)


def _webhook_source(scope: Scope) -> str | None:
    """The source name of a webhook delivery the fast path serves, else None."""
    if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("root_path"):
        return None
    path = str(scope.get("path", ""))
    if not path.startswith(_PREFIX):
        return None
    source = path[len(_PREFIX) :]
    return source if _SOURCE.fullmatch(source) else None


def install_fast_path(app: FastAPI, answer: Answer) -> None:
    """Put ``WebhookFastPath`` in front of the app's middleware stack, which Starlette builds on the first
    request (so the middleware added before then stays behind it)."""
    build = app.build_middleware_stack

    def build_with_fast_path() -> ASGIApp:
        return WebhookFastPath(build(), answer)

    app.build_middleware_stack = build_with_fast_path  # type: ignore[method-assign]
