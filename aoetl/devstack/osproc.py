"""Operating-system level helpers shared by the stack components: free ports, liveness of recorded PIDs,
graceful termination, and deadline polling. Components record PIDs in JSON so that a *different* process
(``aoetl dev down`` after ``aoetl dev up``) can find and stop them; everything here therefore works from a
bare PID rather than from a ``subprocess.Popen`` handle.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from aoetl.devstack.errors import StackStartupError


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just told us is free; it may be taken again before use, callers bind soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR, so a port left in TIME_WAIT by our own previous run is reusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on the port (cheap pre-check before a protocol probe)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None, cmdline_marker: str | None = None) -> bool:
    """True when ``pid`` runs and is not a zombie. ``cmdline_marker`` guards against PID reuse: the recorded
    PID only counts when the process command line still contains the marker (e.g. our config path)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if cmdline_marker is not None:
            return any(cmdline_marker in part for part in _cmdline(proc))
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _cmdline(proc: psutil.Process, attempts: int = 5) -> list[str]:
    """The command line; a process that is just starting (inside ``execve``) briefly shows an empty one,
    which must not read as "some other process": seen once in ~70 spawns under load, it made the
    supervisor report a healthy new replica as "exited during startup"."""
    for _ in range(attempts - 1):
        cmdline = proc.cmdline()
        if cmdline:
            return cmdline
        time.sleep(0.01)
    return proc.cmdline()


def terminate(pid: int | None, timeout: float = 20.0, cmdline_marker: str | None = None) -> None:
    """SIGTERM, wait up to ``timeout``, SIGKILL as the last resort. Returns once the process is gone
    (reaped when it is our child, so no zombie lingers)."""
    if not pid_alive(pid, cmdline_marker):
        _reap(pid)
        return
    assert pid is not None
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    _reap(pid)


def _reap(pid: int | None) -> None:
    if not pid:
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.25, what: str) -> None:
    """Poll ``predicate`` until it is true or raise :class:`StackStartupError` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise StackStartupError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two ``up`` calls (or two pytest runs) never race on one state folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(path: Path, lines: int = 30) -> str:
    """Last lines of a log file for error messages ('' when absent)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
