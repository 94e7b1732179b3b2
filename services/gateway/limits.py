"""Two small ASGI middlewares around the API, a body-size limit and a request id, and the webhook
endpoint's own limited read of a body (``read_limited_body``).

``BodyLimit``: every request body is read here, up to ``limit`` bytes, before the application sees it;
a body declared (Content-Length) or found (while streaming: chunked bodies carry no length) to be larger
is answered 413 at once, so no endpoint can be made to buffer an unbounded body, whatever its parameters.
Webhook paths are left to their own, separately configured limit in the endpoint (which also counts
them in the webhook metrics). Written as plain ASGI because Starlette's ``BaseHTTPMiddleware`` cannot
stop a body part-way through.

``read_limited_body``: the webhook endpoint's read, under its own ``AOETL_MAX_BODY_BYTES``, refused the
same way (413 from Content-Length before reading, else while streaming).

``RequestId``: each request gets an id (the caller's ``X-Request-Id`` when it is a sane one, else a new
one), kept in ``request.state.request_id`` for the audit records and returned in the answer's
``X-Request-Id``, so a caller can quote it and an operator find the audit record.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException, Request

from services.gateway.metrics import API_AUTH
from shared.auth.audit import request_id_from

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, limit: int, exempt_prefixes: tuple[str, ...] = ()):
        self.app = app
        self.limit = limit
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.limit:
                await self._too_large(send)
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nothing to answer
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._too_large(send)
                return
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as a server would

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        API_AUTH.labels("too_large").inc()
        await _answer(send, 413, f"body larger than {self.limit} bytes")


class RequestId:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, REQUEST_ID_HEADER.encode()))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h for h in message.get("headers", []) if h[0].lower() != REQUEST_ID_HEADER.encode()
                ]
                message["headers"] = [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit``: from Content-Length before
    reading anything, else while streaming (chunked bodies carry no length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, detail="Content-Length is not a number")
        if int(declared) > limit:
            raise HTTPException(413, detail=f"body larger than {limit} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise HTTPException(413, detail=f"body larger than {limit} bytes")
    return bytes(received)
