"""When the orchestrator's runs need it next: run deadlines and due task retries, in two heaps, so a
tick looks only at what is due instead of at every open run (with 10,000 runs open, the scan took ~25 ms
of the loop thread every second).

Entries are hints, checked against the run book when they come due (``RunBook.tick``): a run that
finished, a retry already issued or a deadline that moved (a healed spec with another timeout) leaves a
stale entry, which is dropped or pushed again at the new time. So a timer never decides anything itself
and the book stays a pure fold with the clock passed in. Stale entries are bounded: when a heap holds
more than twice as many entries as the live timers the book reports (plus a small floor), it is rebuilt
from them, so memory follows the open runs, not the runs seen.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Generic, TypeVar

from services.orchestrator.run_state import Phase, RunState

K = TypeVar("K")

COMPACT_FLOOR = 1024  # entries a heap may hold beyond twice the live ones before it is rebuilt


class TimerHeap(Generic[K]):
    """Keys by due time, earliest first; the same key may be in it more than once (see the module)."""

    def __init__(self, live: Callable[[], Iterable[tuple[datetime, K]]]):
        self._live = live  # every timer that still holds: what a rebuild keeps
        self._heap: list[tuple[datetime, int, K]] = []
        self._seq = itertools.count()  # equal times come out in the order they were pushed

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: datetime, key: K) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), key))

    def pop_due(self, now: datetime) -> Iterator[K]:
        """The keys due at ``now`` (popped; the caller pushes back what is not over)."""
        due: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return iter(due)

    def compact(self, live_count: int) -> None:
        """Rebuild from the live timers when stale entries outnumber them."""
        if len(self._heap) <= 2 * live_count + COMPACT_FLOOR:
            return
        self._heap = [(due, next(self._seq), key) for due, key in self._live()]
        heapq.heapify(self._heap)


def live_deadlines(runs: Iterable[RunState]) -> list[tuple[datetime, str]]:
    """The deadlines that still count: one-shot runs not yet finishing."""
    return [(run.deadline, run.run_id) for run in runs if run.phase is Phase.RUNNING and not run.continuous]


def live_retries(runs: Iterable[RunState]) -> list[tuple[datetime, tuple[str, str]]]:
    """The retries not yet issued, by (run id, task id)."""
    return [
        (task.retry_due, (run.run_id, task_id))
        for run in runs
        for task_id, task in run.tasks.items()
        if task.retry_due is not None
    ]
