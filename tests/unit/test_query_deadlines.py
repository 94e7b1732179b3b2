"""``shared.transform.deadlines.Watchdog``: a deadline's callback runs once it passes while its block still
runs, never after its block ended, and the earliest deadline is served first. Awaited on events, no
sleeps; the engine's own limit test (test_transform_sandbox) interrupts a real DuckDB query with it."""

from __future__ import annotations

import threading

import pytest

from shared.transform.deadlines import Watchdog

pytestmark = pytest.mark.unit


def test_a_deadline_that_passes_inside_its_block_calls_back_once() -> None:
    fired = threading.Event()
    calls: list[str] = []
    watchdog = Watchdog()

    def expire() -> None:
        calls.append("expired")
        fired.set()

    with watchdog.deadline(0.01, expire):
        assert fired.wait(10), "the callback ran while the block was running"
    assert calls == ["expired"]


def test_a_block_that_ends_first_is_never_called_back_and_the_earliest_deadline_goes_first() -> None:
    now = [0.0]
    watchdog = Watchdog(clock=lambda: now[0])
    order: list[str] = []
    done = threading.Event()
    with watchdog.deadline(5.0, lambda: order.append("never")):
        pass  # ended before its deadline: disarmed

    def late_expired() -> None:
        order.append("late")
        done.set()

    late = watchdog.arm(2.0, late_expired)
    watchdog.arm(1.0, lambda: order.append("early"))
    now[0] = 3.0  # both passed: the watcher sees it at its next wake-up
    with watchdog._cond:
        watchdog._cond.notify()
    assert done.wait(10)
    watchdog.disarm(late)  # already fired: a no-op
    assert order == ["early", "late"]
