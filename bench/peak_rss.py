"""Peak resident memory per process for the benchmarks, per measurement rather than per process lifetime.

What it guarantees: ``vm_hwm_mib`` is the kernel's own high-water mark (``VmHWM`` in ``/proc/PID/status``),
so a peak between two looks is never missed for a process that is alive at the end. ``PeakRss`` resets that
mark (``5`` into ``/proc/PID/clear_refs``, Linux >= 4.0) for the aoetl services and the stack's broker when a
measurement starts, so each round reports its own peak, not the largest of the bench so far (a Python
service keeps what it touched, so the reset value is its resident size then, never less). PostgreSQL
backends come and go with their connections (``psql``'s, each load run's), and a process's mark goes with
it, so the postmaster's client backends are looked at every ``interval_s`` while the measurement lasts: for
those the figure is the last mark seen before the backend exited (at most ``interval_s`` early). The tool
under measurement (``psql``, dlt's Python, the ``aoetl`` CLI: the bench's children started in the block; the
stack's broker, PostgreSQL and services are the bench's children too) is looked at the same way, because
its rusage cannot say: ``ru_maxrss`` of a child counts the memory of the process it was forked from before
its ``exec`` (the bench's own ~110 MiB); a child not yet past its ``exec`` (its command line still the
bench's) is skipped for the same reason. Only the
bench's own stack is looked at (its state folder is in the broker's and the postmaster's command lines):
other stacks on the same machine are someone else's.

A backend's resident size counts the shared buffers it touched (up to ``shared_buffers``), so a backend that
writes more pages looks bigger without holding more memory of its own: ``postgres_backend_private`` is the
largest of its private (anonymous) resident memory seen, sampled, so a short peak may be missed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from types import TracebackType


def status_mib(pid: int, field: str) -> float | None:
    """One ``kB`` field of ``/proc/PID/status`` in MiB, None when the process is gone (or not readable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def vm_hwm_mib(pid: int) -> float | None:
    """The process's peak resident size in MiB."""
    return status_mib(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Start the process's high-water mark again from its resident size now (best effort)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def is_client_backend(title: str) -> bool:
    """A PostgreSQL process title of a client connection (``postgres: user db 127.0.0.1(5432) idle``,
    ``... [local] ...``), not an auxiliary process (checkpointer, walwriter, ...)."""
    return title.startswith("postgres: ") and ("(" in title or "[local]" in title)


def stack_processes(stack_dir: Path) -> tuple[list[int], int | None]:
    """The broker pids and the postmaster pid of the stack whose state is under ``stack_dir``."""
    marker = str(stack_dir.resolve()) + "/"
    brokers, postmaster = [], None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        line = _cmdline(int(entry.name))
        if marker not in line:
            continue
        program = line.split(" ", 1)[0]
        if program.endswith("/java") and "kafka.Kafka" in line:
            brokers.append(int(entry.name))
        elif program.endswith("/postgres") and " -D " in line:
            postmaster = int(entry.name)
    return brokers, postmaster


def _keep_peak(peaks: dict[int, float], pid: int, field: str = "VmHWM") -> None:
    peak = status_mib(pid, field)
    if peak is not None:
        peaks[pid] = max(peak, peaks.get(pid, 0.0))


class PeakRss:
    """Peak RSS in MiB per group over a ``with`` block: ``tool`` (the largest process this one started
    during the block, or one of those did), each named service (pid -> name), ``kafka`` (the stack's
    broker) and ``postgres_backend`` (the largest client backend of the stack's PostgreSQL alive during the
    block; ``postgres_backend_private`` its anonymous part). ``result`` holds them after the block, and
    ``timeline()`` the named processes' resident size through it."""

    def __init__(self, services: dict[int, str], stack_dir: Path, interval_s: float = 0.1) -> None:
        brokers, self._postmaster = stack_processes(stack_dir)
        self._named = dict(services) | {pid: "kafka" for pid in brokers}
        self._interval = interval_s
        self._backends: dict[int, float] = {}
        self._backends_private: dict[int, float] = {}  # RssAnon as last seen: without the shared buffers
        self._tools: dict[int, float] = {}
        self._own = _cmdline(os.getpid())
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="peak-rss", daemon=True)
        self.result: dict[str, float | None] = {}
        self._samples: list[dict[str, float | None]] = []  # each look's VmRSS of the named processes

    def timeline(self, points: int = 10) -> dict[str, list[float | None]]:
        """Per named group, its resident size at ``points`` evenly spaced looks of the block (the last one
        at its end): flat memory is a level line through the run, not only a peak that matches."""
        if not self._samples:
            return {}
        picked = [self._samples[round((i + 1) * (len(self._samples) - 1) / points)] for i in range(points)]
        return {group: [sample.get(group) for sample in picked] for group in self._samples[-1]}

    def _look(self) -> None:
        self._samples.append({group: status_mib(pid, "VmRSS") for pid, group in self._named.items()})
        for pid in _children(self._postmaster) if self._postmaster else ():
            if pid in self._backends or is_client_backend(_cmdline(pid)):
                _keep_peak(self._backends, pid)
                _keep_peak(self._backends_private, pid, "RssAnon")
        for pid in self._descendants():
            if pid in self._tools or _cmdline(pid) not in (self._own, ""):
                _keep_peak(self._tools, pid)

    def _descendants(self) -> list[int]:
        """This process's descendants that were not there when the block started (the stack's broker,
        PostgreSQL and services are children of the bench too), theirs included."""
        found, todo = [], _children(os.getpid())
        while todo:
            pid = todo.pop()
            if pid not in self._before:
                found.append(pid)
                todo.extend(_children(pid))
        return found

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self._look()

    def __enter__(self) -> PeakRss:
        self._before = set(self._descendants())
        for pid in (*self._named, *(_children(self._postmaster) if self._postmaster else ())):
            reset_peak(pid)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._look()
        found: dict[str, float | None] = {"tool": max(self._tools.values(), default=None)}
        for pid, group in self._named.items():
            peak = vm_hwm_mib(pid)
            known = found.get(group)
            found[group] = peak if known is None else max(known, peak or 0.0)
        found["postgres_backend"] = max(self._backends.values(), default=None)
        found["postgres_backend_private"] = max(self._backends_private.values(), default=None)
        self.result = found
