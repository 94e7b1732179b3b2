"""A stand-in service for supervisor tests: announces itself, then idles until SIGTERM.

``TINY_SERVICE_IGNORE_SIGTERM=1`` makes it ignore SIGTERM so the SIGKILL fallback can be tested.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


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
    stopped.wait()
    (marker_dir / f"{ident}.stopped").write_text("graceful")


if __name__ == "__main__":
    main()
