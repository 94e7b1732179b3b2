"""Graceful shutdown on SIGTERM / SIGINT.

The first signal only *asks* to stop: it sets a ``threading.Event`` that the processing loops check between
batches, so the current batch (and its Kafka transaction) finishes and the consumer leaves its group
cleanly. A second signal means the operator has run out of patience: the process exits at once with
128 + the signal number (130 for Ctrl-C twice), as a shell would report a signal death.

Threaded services wait on ``event``; asyncio services get an ``asyncio.Event`` from ``asyncio_event()``
that is set from the signal handler through ``call_soon_threadsafe`` (the only loop call that is safe
from there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

_log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulShutdown:
    def __init__(self) -> None:
        self.event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._previous: dict[int, object] = {}
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when a stop is requested; True if it was."""
        return self.event.wait(timeout)

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (once) when a stop is requested; at once if it already was."""
        self._callbacks.append(callback)
        if self.requested:
            callback()

    def request(self, reason: str = "requested") -> None:
        """Ask everything watching this object to stop (what the first signal does)."""
        if self.requested:
            return
        self.reason = reason
        self.event.set()
        for callback in self._callbacks:
            try:
                callback()
            except Exception:
                _log.exception("shutdown callback failed")

    def asyncio_event(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Event:
        """An ``asyncio.Event`` on ``loop`` (the running loop by default) that is set on stop."""
        loop = loop or asyncio.get_running_loop()
        stopped = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(stopped.set)

        self.add_callback(wake)
        return stopped

    def install(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> GracefulShutdown:
        """Take over ``signals``. Must be called from the main thread (a Python rule for signal handlers)."""
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            # os.write, not logging: the handler may interrupt a log call holding the stream, and we are
            # about to skip every cleanup on purpose.
            os.write(2, f"second {name}: forcing exit\n".encode())
            os._exit(128 + signum)
        _log.info("%s received: finishing the current batch, then stopping (send again to force)", name)
        self.request(name)


def install_signal_handlers(signals: Iterable[int] = DEFAULT_SIGNALS) -> GracefulShutdown:
    return GracefulShutdown().install(signals)
