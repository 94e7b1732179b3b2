"""A JSON HTTP server on 127.0.0.1 for the tests of HTTP sources: the connector's pagination, retries and
auth (tests/integration/test_connectors_http.py), its egress checks (test_http_egress.py) and the running
system's http sources (tests/e2e). Never the internet.

Each test module says what to answer with one function, ``respond(request) -> Reply``; the server records
every request it received (path, query, headers, arrival time) before answering, so a test can prove what
was sent, and that nothing was (``requests == []``).

Written on the standard library's ``ThreadingHTTPServer`` rather than a mocking library on purpose: the
system under test runs in other processes (e2e), and the egress tests need a real socket on a chosen
loopback port, which is what a plain server gives; what is hand-written here is only the JSON reply and
the request log.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Request:
    target: str  # the request target as sent: path and query
    path: str
    query: dict[str, str]  # the first value of each parameter
    headers: dict[str, str]  # as sent (names keep the client's case)
    at: float  # time.monotonic() on arrival

    @property
    def authorization(self) -> str | None:
        """The Authorization header, whatever the case of its name (HTTP header names are not)."""
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded, unless already bytes (a body that is not JSON)
    headers: dict[str, str] = field(default_factory=dict)


Respond = Callable[[Request], Reply]


@dataclass
class JsonServer:
    port: int
    requests: list[Request] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(server: JsonServer, respond: Respond) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

        def do_GET(self) -> None:
            arrived = time.monotonic()  # first, so that timing tests (rate limits) see the least jitter
            url = urlparse(self.path)
            request = Request(
                target=self.path,
                path=url.path,
                query={key: values[0] for key, values in parse_qs(url.query).items()},
                headers=dict(self.headers),
                at=arrived,
            )
            server.requests.append(request)
            reply = respond(request)
            data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def json_server(respond: Respond, port: int = 0) -> Iterator[JsonServer]:
    """Serve ``respond`` on 127.0.0.1:``port`` (0: any free port) in a thread, until the block ends; the
    port is free again afterwards (the next test may bind the same one)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    state = JsonServer(httpd.server_address[1])
    httpd.RequestHandlerClass = _handler(state, respond)
    # shutdown() waits for the serving loop to look at its flag, once per poll interval: 50 ms, not the
    # default 0.5 s that every test using a server would otherwise spend in its teardown
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name=f"json-server-{state.port}", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
