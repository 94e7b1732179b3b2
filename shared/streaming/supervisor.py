"""Keeping one worker thread per desired key: the extract service's continuous pipelines (one reader per
RUNNING pipeline of the streams topic) and the orchestrator's topic triggers (one reader per topic rule
of the current definitions) are both this reconcile loop.

Every ``refresh_s`` the supervisor asks what is desired (key -> what the worker serves) and makes it so:
a worker whose key is gone, whose value changed or whose thread died is stopped and joined, then a
worker is started for every desired key without one. Workers are stopped all at once and joined after,
so a change of many keys costs one join timeout, not one per worker. On ``stop`` every worker leaves
(each commits what it read first, so its successor starts there).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

_log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class Worker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float) -> None: ...

    def is_alive(self) -> bool: ...


class WorkerSupervisor(Generic[K, V]):
    def __init__(
        self,
        name: str,
        desired: Callable[[], Mapping[K, V]],
        start_worker: Callable[[K, V], Worker],
        *,
        refresh_s: float = 1.0,
        join_timeout_s: float = 60.0,
    ):
        self._desired, self._start_worker = desired, start_worker
        self._refresh_s, self._join_timeout_s = refresh_s, join_timeout_s
        self.workers: dict[K, tuple[V, Worker]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._join_timeout_s)

    def _supervise(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.reconcile(self._desired())
                except Exception:
                    _log.exception("%s could not be reconciled", self._thread.name)
                self._stop.wait(self._refresh_s)
        finally:
            self.reconcile({})

    def reconcile(self, desired: Mapping[K, V]) -> None:
        stale = [
            key
            for key, (value, worker) in self.workers.items()
            if key not in desired or desired[key] != value or not worker.is_alive()
        ]
        for key in stale:
            self.workers[key][1].stop()
        for key in stale:
            self.workers.pop(key)[1].join(self._join_timeout_s)
        for key, value in desired.items():
            if key not in self.workers:
                worker = self._start_worker(key, value)
                worker.start()
                self.workers[key] = (value, worker)
