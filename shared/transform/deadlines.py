"""One watchdog thread for every transform query's time limit.

DuckDB has no statement timeout, so a query past the sandbox's limit is interrupted from another thread.
A ``threading.Timer`` per query did that by starting a thread per batch (~0.4 ms of a small batch's
~2-4 ms in the engine, which every stage pays per batch when thousands of small runs go at once). Here
one daemon thread, started with the first deadline, waits for the earliest armed deadline and calls its
callback once it passes.

Guarantee: once ``disarmed`` (the end of a ``deadline`` block) returns, that deadline's callback has either
run or never will: callbacks run under the watchdog's lock, so an interrupt can never reach a connection
after its query's block ended (a Timer could fire between the query's end and its ``cancel``).
Callbacks must be quick and must not arm deadlines themselves (``DuckDBPyConnection.interrupt`` is both).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Watchdog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], object]]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def deadline(self, seconds: float, on_expiry: Callable[[], object]) -> Iterator[None]:
        """``on_expiry`` is called if the block is still running ``seconds`` from now."""
        token = self.arm(seconds, on_expiry)
        try:
            yield
        finally:
            self.disarm(token)

    def arm(self, seconds: float, on_expiry: Callable[[], object]) -> int:
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (self._clock() + seconds, on_expiry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="query-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                if not self._armed:
                    self._cond.wait()
                    continue
                token, (due, on_expiry) = min(self._armed.items(), key=lambda item: item[1][0])
                wait = due - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                del self._armed[token]
                on_expiry()


QUERY_DEADLINES = Watchdog()
