"""``/health``, ``/ready`` and ``/metrics`` over HTTP on a daemon thread.

The standard library's ThreadingHTTPServer is enough for three read-only endpoints hit by probes and a
scraper; it adds no dependency and, unlike an asyncio server, keeps answering while a threaded
(confluent-kafka) service is blocked inside a poll or a long batch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shared.metrics import render

ReadinessCheck = Callable[[], bool]

_log = logging.getLogger(__name__)


class HealthServer:
    """``/health`` is 200 while the process runs; ``/ready`` is 200 only when every readiness check passes
    (503 with the failing names otherwise); ``/metrics`` is the Prometheus exposition."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, checks: Mapping[str, ReadinessCheck] | None = None
    ):
        self._checks: dict[str, ReadinessCheck] = dict(checks or {})
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port: the real one when 0 was asked for."""
        return int(self._server.server_address[1])

    def readiness(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in list(self._checks.items()):
            try:
                results[name] = bool(check())
            except Exception:  # a broken check means not ready, never a 500 loop in the probe
                _log.exception("readiness check %s failed", name)
                results[name] = False
        return results

    def start(self) -> HealthServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_port_file(path: Path, port: int) -> None:
    """Write atomically, so a reader polling for the file never sees it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send_json(200, {"status": "ok"})
            elif path == "/ready":
                checks = server.readiness()
                ready = all(checks.values())
                self._send_json(200 if ready else 503, {"ready": ready, "checks": checks})
            elif path == "/metrics":
                body, content_type = render()
                self._send(200, body, content_type)
            else:
                self._send_json(404, {"error": f"no such endpoint {path}"})

        def _send_json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes hit these endpoints every few seconds; access lines would drown the useful logs.
            _log.debug("health http: " + format, *args)

    return Handler
