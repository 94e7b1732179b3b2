"""A stand-in service for supervisor tests: announces itself, answers ``/ready`` on ``AOETL_HTTP_PORT``,
then idles until SIGTERM.

``TINY_SERVICE_IGNORE_SIGTERM=1`` makes it ignore SIGTERM so the SIGKILL fallback can be tested.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    stopped = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    if os.environ.get("TINY_SERVICE_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    marker_dir = Path(os.environ["TINY_SERVICE_DIR"])
    ident = f"{os.environ['AOETL_SERVICE_NAME']}-{os.environ['AOETL_REPLICA_INDEX']}"
    print(f"started {ident} port={os.environ['AOETL_HTTP_PORT']} args={sys.argv[1:]}", flush=True)
    (marker_dir / f"{ident}.started").write_text(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["AOETL_HTTP_PORT"])), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    (marker_dir / f"{ident}.stopped").write_text("graceful")


if __name__ == "__main__":
    main()
