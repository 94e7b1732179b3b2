"""A small supervisor for service replicas: ``python -m services.<name>`` as subprocesses.

Each replica gets the caller's environment plus its identity (``AOETL_SERVICE_NAME``,
``AOETL_REPLICA_INDEX``, ``AOETL_INSTANCE_ID``) and a free HTTP port (``AOETL_HTTP_PORT``) for /health,
/ready and /metrics, writes its output to ``<state>/logs/<name>-<index>.log``, and is recorded in
``<state>/services.json`` so a later process (``aoetl dev down``) can stop it.
Stopping is graceful first: SIGTERM, a deadline, then SIGKILL.

The gateway also listens for its API (``AOETL_API_PORT``, 8000 by default): one API port per replica.
The first replica keeps the configured port (so ``http://127.0.0.1:8000``, the CLI's default gateway
URL, still answers), every further replica gets a free port of its own, and each replica's API address is
recorded (``ServiceProcess.api_url``, shown by ``aoetl dev status``). Two replicas on the configured port
used to leave one dead with "address already in use". A port given explicitly to ``start`` (``env``) is
used as given. One shared listener (``SO_REUSEPORT``) was the other way; it was not taken because it
needs the gateway to build its own socket, balances connections only on Linux, and hides which replica
answered, which is what a developer running replicas locally wants to see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import httpx

from aoetl.devstack.errors import StackStartupError
from aoetl.devstack.osproc import file_lock, free_port, pid_alive, tail, terminate, wait_for
from aoetl.devstack.state import read_json, write_json
from shared.policy.settings import DATA_ROOTS_ENV, dev_data_roots_env

SERVICE_NAMES: Final = ("gateway", "orchestrator", "extract", "transform", "load", "monitor")
SERVICES_FILE: Final = "services.json"
API_PORT_ENV: Final = "AOETL_API_PORT"
API_HOST_ENV: Final = "AOETL_API_HOST"
DEFAULT_API_PORT: Final = "8000"  # services.gateway.configuration's default, which the CLI's URL assumes
API_SERVICES: Final = frozenset({"gateway"})  # the services that listen for an API beside their probes


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    replica: int
    module: str
    pid: int
    http_port: int
    log: str
    api_url: str | None = None  # the API's address, for a service that has one (and a known port)

    def is_alive(self) -> bool:
        # The module name guards against PID reuse after the replica died.
        return pid_alive(self.pid, cmdline_marker=self.module)

    def is_ready(self) -> bool:
        return self.is_alive() and _answers_ready(self.http_port)


class ServiceSupervisor:
    """Start/stop replicas of ``python -m <module>``; usable as a context manager in tests."""

    def __init__(self, state_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.env = dict(env or {})
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def _file(self) -> Path:
        return self.state_dir / SERVICES_FILE

    def processes(self) -> list[ServiceProcess]:
        return [ServiceProcess(**entry) for entry in read_json(self._file).get("processes", [])]

    def alive(self, name: str | None = None) -> list[ServiceProcess]:
        return [p for p in self.processes() if (name is None or p.name == name) and p.is_alive()]

    def start(
        self,
        name: str,
        replicas: int = 1,
        *,
        module: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[ServiceProcess]:
        """Start ``replicas`` more processes of ``module`` (default ``services.<name>``)."""
        module = module or f"services.{name}"
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        started: list[ServiceProcess] = []
        with file_lock(self.state_dir / ".services.lock"):
            existing = self.processes()
            first_index = 1 + max((p.replica for p in existing if p.name == name), default=-1)
            for index in range(first_index, first_index + replicas):
                http_port = free_port()
                api = _api_env(name, index, {**os.environ, **self.env}, env or {})
                child_env = {
                    **os.environ,
                    **self.env,
                    **(env or {}),
                    **api,
                    "AOETL_SERVICE_NAME": name,
                    "AOETL_REPLICA_INDEX": str(index),
                    "AOETL_INSTANCE_ID": f"{name}-{index}",
                    "AOETL_HTTP_PORT": str(http_port),
                    "PYTHONUNBUFFERED": "1",
                }
                # A local stack's services read and write the development data roots unless told others
                # (``shared.policy.settings``; a deployment without the variable gets no file access).
                child_env.setdefault(DATA_ROOTS_ENV, dev_data_roots_env())
                log_path = logs / f"{name}-{index}.log"
                with log_path.open("ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", module, *args],
                        env=child_env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # a Ctrl-C in the terminal must not bypass graceful stop
                    )
                self._children[proc.pid] = proc
                started.append(
                    ServiceProcess(
                        name, index, module, proc.pid, http_port, str(log_path), _api_url(name, child_env)
                    )
                )
            self._record([*existing, *started])
        return started

    def wait_ready(self, processes: Sequence[ServiceProcess], timeout: float = 60.0) -> None:
        """Poll each replica's ``/ready`` until 200; a replica that exits meanwhile fails fast."""

        def all_ready() -> bool:
            for proc in processes:
                if not proc.is_alive():
                    raise StackStartupError(
                        f"{proc.name}[{proc.replica}] exited during startup; "
                        f"{proc.log}:\n{tail(Path(proc.log))}"
                    )
            return all(proc.is_ready() for proc in processes)

        wait_for(all_ready, timeout=timeout, interval=0.25, what=f"{len(processes)} replica(s) to be ready")

    def stop(self, name: str | None = None, timeout: float = 15.0) -> None:
        """Stop every replica (or those of ``name``): SIGTERM all first so they drain in parallel."""
        with file_lock(self.state_dir / ".services.lock"):
            targets = [p for p in self.processes() if name is None or p.name == name]
            for proc in targets:
                if proc.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
            for proc in targets:
                terminate(proc.pid, timeout=timeout, cmdline_marker=proc.module)
                child = self._children.pop(proc.pid, None)
                if child is not None:
                    child.poll()  # reap, so no zombie outlives the supervisor
            self._record([p for p in self.processes() if p not in targets])

    def _record(self, processes: list[ServiceProcess]) -> None:
        write_json(self._file, {"processes": [asdict(p) for p in processes]})

    def __iter__(self) -> Iterator[ServiceProcess]:
        return iter(self.processes())

    def __enter__(self) -> ServiceSupervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _api_env(name: str, index: int, inherited: Mapping[str, str], given: Mapping[str, str]) -> dict[str, str]:
    """The API port of replica ``index`` of ``name`` (see the module docstring); {} for other services."""
    if name not in API_SERVICES or API_PORT_ENV in given:
        return {}
    configured = inherited.get(API_PORT_ENV, DEFAULT_API_PORT)
    if index == 0 and configured not in ("", "0"):
        return {API_PORT_ENV: configured}
    return {API_PORT_ENV: str(free_port())}


def _api_url(name: str, env: Mapping[str, str]) -> str | None:
    port = env.get(API_PORT_ENV, DEFAULT_API_PORT)
    if name not in API_SERVICES or not port.isdigit() or int(port) == 0:
        return None  # port 0: the replica picks one and writes it to its AOETL_API_PORT_FILE
    host = env.get(API_HOST_ENV) or "127.0.0.1"
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def _answers_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
