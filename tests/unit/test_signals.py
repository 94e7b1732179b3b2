"""First SIGTERM/SIGINT asks to stop, a second one forces the exit. Real signals, so each case runs in a
child process."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shared.signals import GracefulShutdown

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# The child announces each phase on stdout. After the first signal it "finishes its batch": a threaded
# worker that ends at once (graceful case) or never (stuck case, where only a second signal helps).
CHILD = textwrap.dedent(
    """
    import sys, threading
    from shared.signals import install_signal_handlers

    stuck = sys.argv[1] == "stuck"
    shutdown = install_signal_handlers()
    print("ready", flush=True)
    while not shutdown.wait(0.05):
        pass
    print("stopping", shutdown.reason, flush=True)
    if stuck:
        threading.Event().wait(60)
    print("stopped cleanly", flush=True)
    """
)


def start_child(mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 15.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from the child within {timeout}s"
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_stops_gracefully(signum: int) -> None:
    proc = start_child("graceful")
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(signum)
        assert read_line(proc) == f"stopping {signal.Signals(signum).name}"
        assert read_line(proc) == "stopped cleanly"
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_forces_exit(signum: int) -> None:
    proc = start_child("stuck")
    try:
        assert read_line(proc) == "ready"
        proc.send_signal(signum)
        assert read_line(proc).startswith("stopping")
        started = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 128 + signum
        assert time.monotonic() - started < 5
        _, stderr = proc.communicate()
        assert "forcing exit" in stderr
    finally:
        proc.kill()
        proc.communicate()


def test_request_runs_callbacks_once_and_late_callbacks_at_once() -> None:
    shutdown = GracefulShutdown()
    calls: list[str] = []
    shutdown.add_callback(lambda: calls.append("early"))
    assert not shutdown.requested
    shutdown.request("test")
    shutdown.request("again")
    shutdown.add_callback(lambda: calls.append("late"))
    assert calls == ["early", "late"]
    assert shutdown.requested and shutdown.reason == "test"
    assert shutdown.wait(0)


def test_asyncio_event_is_set_from_another_thread() -> None:
    shutdown = GracefulShutdown()

    async def main() -> bool:
        stopped = shutdown.asyncio_event()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, shutdown.request, "from a thread")
        await asyncio.wait_for(stopped.wait(), timeout=10)
        return stopped.is_set()

    assert asyncio.run(main())


def test_install_and_restore_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    shutdown = GracefulShutdown().install([signal.SIGTERM])
    try:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.wait(5)
    finally:
        shutdown.restore()
    assert signal.getsignal(signal.SIGTERM) == before
