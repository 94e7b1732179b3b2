"""Pausing Python's cyclic garbage collector over an allocation burst that creates no reference cycles.

Why: a continuous pipeline's extract allocates a Python object per consumed record (librdkafka's message
objects, then one dict per JSON event) tens of thousands at a time. Each 700 allocations of tracked
objects start a generation-0 collection, every tenth of those a generation-1 one, and the records a
window holds are traversed again and again while they wait: a sampling profile of the extract on a
drain of 1M small JSON events spent about as much time in ``gc_collect_main`` as in all the decoding and
table building it interrupted. (Services now collect young objects every 10,000 allocations,
``shared.runtime.prepare_garbage_collector``; a window still allocates 50,000 and more at once.)
Neither burst can leak a cycle (messages and JSON dicts refer to nothing that refers back), so the
collector has nothing to find in them; reference counting frees them as before.

The pause is process-wide (the collector has no per-thread switch) and short: a non-blocking drain of
what a consumer has fetched, or the decoding of one window. It never blocks waiting; what another
thread allocates meanwhile is collected when the pause ends. Nested and concurrent pauses are safe: the
collector is re-enabled only by the pause that disabled it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """The block runs with the cyclic collector off, unless it was off already (then it stays off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
