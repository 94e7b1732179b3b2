"""The gateway's loop watch: a held loop shows up as lag, and every garbage collection as a pause."""

from __future__ import annotations

import asyncio
import gc
import time

from services.gateway.loopwatch import GcPauses, LoopLagProbe


async def test_a_held_loop_is_measured_as_lag() -> None:
    lags: list[float] = []
    stopped = asyncio.Event()
    probe = asyncio.create_task(LoopLagProbe(0.001, observe=lags.append).run(stopped))
    while not lags:
        await asyncio.sleep(0)
    time.sleep(0.05)  # synchronous work holding the loop, as a blocking call in a handler would
    held = len(lags)
    while len(lags) == held:
        await asyncio.sleep(0)
    stopped.set()
    await probe
    assert lags[held] >= 0.04
    assert all(lag >= 0 for lag in lags)


def test_every_collection_is_timed_by_generation() -> None:
    pauses: list[tuple[int, float]] = []
    watch = GcPauses(observe=lambda gen, s: pauses.append((gen, s))).install()
    watch.install()  # idempotent: one entry, so each collection is counted once
    try:
        gc.collect(1)
        gc.collect(2)
    finally:
        watch.uninstall()
    assert [gen for gen, _ in pauses][-2:] == [1, 2]
    assert len([gen for gen, _ in pauses if gen == 2]) == 1
    assert all(s >= 0 for _, s in pauses)
    assert watch not in gc.callbacks
