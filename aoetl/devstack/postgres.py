"""A private PostgreSQL cluster from the distribution's server binaries (``initdb`` + ``pg_ctl``).

``initdb`` refuses to run as root, so as root every server command runs as the ``postgres`` system user
(``runuser -u postgres --``) on a data folder owned by that user. The server listens on 127.0.0.1 only, on a
free port, with its socket in the state folder so it never collides with a system cluster.
Installing the binaries is the bootstrap's job (``make bootstrap``), never this module's.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg

from aoetl.devstack.errors import MissingToolError, StackStartupError
from aoetl.devstack.osproc import free_port, pid_alive, port_is_free, tail, terminate, wait_for

DATABASE: Final = "aoetl"
SUPERUSER: Final = "postgres"


def find_pg_bindir() -> Path:
    """``$AOETL_PG_BINDIR``, else the newest ``/usr/lib/postgresql/<major>/bin``, else ``initdb`` on PATH."""
    override = os.environ.get("AOETL_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise MissingToolError("PostgreSQL server binaries (initdb, pg_ctl) not found; run `make bootstrap`")


def _as_server_user() -> list[str]:
    """Command prefix that runs a server binary as a non-root user (empty when we are not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError as exc:
        raise MissingToolError(
            "running as root needs the 'postgres' system user (apt-get install postgresql)"
        ) from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise MissingToolError("runuser is required to start PostgreSQL as root")
    return [runuser, "-u", SUPERUSER, "--"]


def _check_traversable(path: Path) -> None:
    """As root, the server user must be able to reach the data folder; tmp folders made by ``mkdtemp`` are
    0700 and would fail deep inside ``initdb`` with a confusing message, so fail early and clearly."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise MissingToolError(
                f"{parent} is not traversable by the 'postgres' user (mode {oct(mode & 0o777)}); "
                "use a state folder whose parents are world-executable"
            )


@dataclass
class PostgresNode:
    """One PostgreSQL cluster under ``home`` (data, socket, log)."""

    home: Path
    port: int = 0
    pid: int | None = None

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def to_state(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port, "dsn": self.dsn, "log": str(self.log_path)}

    @classmethod
    def from_state(cls, home: Path, state: dict[str, Any] | None) -> PostgresNode:
        state = state or {}
        return cls(home, int(state.get("port") or 0), state.get("pid"))

    def is_running(self) -> bool:
        return pid_alive(self.pid, cmdline_marker=str(self.data_dir))

    def is_ready(self, timeout: float = 3.0) -> bool:
        return self.is_running() and postgres_ready(self.dsn, timeout)

    def start(self, timeout: float = 60.0) -> None:
        if self.is_running():
            wait_for(lambda: postgres_ready(self.dsn), timeout=timeout, what=f"PostgreSQL at {self.dsn}")
            return
        bindir, prefix = find_pg_bindir(), _as_server_user()
        self._prepare_dirs(bool(prefix))
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                prefix,
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                "initdb",
            )
        if not (self.port and port_is_free(self.port)):
            self.port = free_port()
        # Durability settings are off: this cluster holds disposable dev/test data and speed matters more.
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            prefix,
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            "pg_ctl start",
        )
        self.pid = self._postmaster_pid()
        wait_for(
            lambda: postgres_ready(self.dsn.rsplit("/", 1)[0] + "/postgres"),
            timeout=timeout,
            what=f"PostgreSQL on port {self.port}",
        )
        self._create_database()

    def stop(self, timeout: float = 30.0) -> None:
        if self.is_running():
            bindir, prefix = find_pg_bindir(), _as_server_user()
            subprocess.run(
                [
                    *prefix,
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "stop",
                ],
                capture_output=True,
                check=False,
            )
        # pg_ctl is the polite path; the PID fallback covers a wedged server or a missing pg_ctl.
        terminate(self.pid, timeout=timeout, cmdline_marker=str(self.data_dir))
        self.pid = None

    def _prepare_dirs(self, as_server_user: bool) -> None:
        for folder in (self.home, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if as_server_user:
            _check_traversable(self.home)
            entry = pwd.getpwnam(SUPERUSER)
            for folder in (self.home, self.socket_dir):
                os.chown(folder, entry.pw_uid, entry.pw_gid)
            self.home.chmod(0o755)

    def _run(self, prefix: list[str], command: list[str], what: str) -> None:
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackStartupError(
                f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{tail(self.log_path)}"
            )

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _create_database(self) -> None:
        admin_dsn = self.dsn.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')


def postgres_ready(dsn: str, timeout: float = 3.0) -> bool:
    """True when a connection succeeds and answers ``SELECT 1``."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False
