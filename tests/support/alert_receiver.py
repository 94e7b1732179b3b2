"""A webhook receiver on 127.0.0.1 for the alert router's tests: a real socket and HTTP server (the router
runs in the monitor's process), answering POSTs with a scripted sequence of statuses and recording every
delivery with its headers, body and the status it was answered with.

The standard library's ``ThreadingHTTPServer``, as ``tests.support.json_http`` (which serves GETs only):
what is hand-written is the script and the log.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]  # names lower-cased
    body: bytes
    answered: int

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # answers, in order; then 200
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts"

    def of(self, webhook_id: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.webhook_id == webhook_id]

    def accepted(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if 200 <= d.answered < 300]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                receiver.deliveries.append(
                    Delivery({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextlib.contextmanager
def alert_receiver(*script: tuple[int, dict[str, str]]) -> Iterator[Receiver]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = Receiver(httpd.server_address[1], list(script))
    httpd.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
