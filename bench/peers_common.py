"""What the peer benchmarks share (``bench/bench_peers.py``, the batch load, and
``bench/bench_peers_stream.py``, the continuous drain): the peers' own venv, whole-process timing, CPU seconds
of PostgreSQL, the broker and the aoetl services, ``psql`` queries and machine info."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEERS_VENV = REPO / ".state" / "peers-venv"
PEERS_REQUIREMENTS = REPO / "bench" / "peers-requirements.txt"
SERVICES = ("orchestrator", "extract", "transform", "load")


def restart_services(
    supervisor: Any, services: Sequence[str] = SERVICES, env: Mapping[str, Mapping[str, str]] | None = None
) -> dict[int, str]:
    """Stop the stack's services and start one replica of each of ``services`` (with its ``env`` entry
    beside the supervisor's), ready: a bench measures services that start fresh from its own state.
    Their pids by name, for the CPU accounting."""
    supervisor.stop()
    started = [p for name in services for p in supervisor.start(name, 1, env=(env or {}).get(name))]
    supervisor.wait_ready(started, timeout=120)
    return {p.pid: p.name for p in started}


def ensure_peers_venv(venv: Path = PEERS_VENV) -> Path:
    """The peers' interpreter, the venv made and installed from bench/peers-requirements.txt when it is not
    (``make bench-peers`` does the same, and again when the requirements change)."""
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(PEERS_REQUIREMENTS)], check=True)
        (venv / ".installed").touch()
    return python


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    command: list[str], env: dict[str, str] | None = None, stdin: str | None = None, cwd: Path | None = None
) -> dict:
    """Wall and CPU seconds of a whole process, its waited-for children included (reaped with ``wait4``,
    which reads that process's own usage). Not its peak RSS: a child's ``ru_maxrss`` counts the bench's own
    memory it was forked from (``bench.peak_rss.PeakRss`` looks at it instead)."""
    with (
        tempfile.TemporaryFile("w+") as given,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        given.write(stdin or "")
        given.seek(0)
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdin=given, stdout=out, stderr=err, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {proc.returncode}: {output[-2000:]}{errors[-2000:]}")
    return {
        "seconds": wall,
        "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "stdout": output,
    }


def cpu_snapshot(services: dict[int, str]) -> dict[int, tuple[str, float]]:
    """``bench_pipeline.cpu_by_process`` plus, under a negative key, the CPU of the PostgreSQL processes'
    waited-for children: psql's and dlt's backends exit with their connection before the second snapshot,
    and only the postmaster's children times still hold their CPU then."""
    import psutil

    from bench.bench_pipeline import cpu_by_process

    found = cpu_by_process(services)
    for pid, (group, _) in list(found.items()):
        if group == "postgres":
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            found[-pid] = (group, times.children_user + times.children_system)
    return found


def sql(dsn: str, query: str) -> str:
    return subprocess.run(
        ["psql", dsn, "-tAc", query], check=True, capture_output=True, text=True
    ).stdout.strip()


def peer_versions(peers_python: Path, modules: dict[str, str]) -> dict[str, str]:
    """The installed version of each peer distribution (name -> its import name), asked of the peers' venv."""
    probe = "import sys, importlib.metadata as m; print(*(m.version(d) for d in sys.argv[1:]))"
    found = subprocess.run(
        [str(peers_python), "-c", probe, *modules.values()], check=True, capture_output=True, text=True
    ).stdout.split()
    return dict(zip(modules, found, strict=True))


def machine_info(dsn: str, versions: dict[str, str]) -> dict:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "versions": {"postgres": sql(dsn, "SHOW server_version"), **versions},
    }
