"""How long the gateway's event loop is held: every answer, every Kafka acknowledgement and every read-back
of a claim waits for the one loop, so a loop held by synchronous work (encoding, a batch of followed
records, a garbage collection) delays every request in flight at once. Two measures, both as metrics:

* ``aoetl_gateway_loop_lag_seconds``: how late a short sleep wakes (``LoopLagProbe``: asks for
  ``interval_s``, measures the overshoot). A loop that is never held wakes within a fraction of a
  millisecond; the overshoot is what any callback due at that moment waited.
* ``aoetl_gateway_gc_pause_seconds``: each garbage collection of the process, by generation
  (``gc.callbacks``; a collection holds the GIL, so it holds the loop too).

Both are cheap (one timer per interval, two clock reads per collection) and never change what the gateway
does; the webhook bench reads them to say where an acknowledgement's time went.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LOOP_LAG_SECONDS = Histogram(
    "aoetl_gateway_loop_lag_seconds",
    "How late the event loop woke from a short sleep (what any callback due then waited)",
    buckets=_BUCKETS,
)
GC_PAUSE_SECONDS = Histogram(
    "aoetl_gateway_gc_pause_seconds",
    "Garbage collections of the gateway process, by generation",
    ["generation"],
    buckets=_BUCKETS,
)


class LoopLagProbe:
    """Sleeps ``interval_s`` again and again on the running loop and records each wake-up's overshoot."""

    def __init__(self, interval_s: float = 0.01, observe: Any = LOOP_LAG_SECONDS.observe):
        self.interval_s = interval_s
        self._observe = observe

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self._observe(max(time.perf_counter() - asked - self.interval_s, 0.0))


class GcPauses:
    """A ``gc.callbacks`` entry timing every collection; ``install``/``uninstall`` are idempotent."""

    def __init__(self, observe: Any = None):
        self._observe = observe or (lambda gen, s: GC_PAUSE_SECONDS.labels(str(gen)).observe(s))
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self._observe(info.get("generation", -1), time.perf_counter() - self._started)
            self._started = None

    def install(self) -> GcPauses:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)
