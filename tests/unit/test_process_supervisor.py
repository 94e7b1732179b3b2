from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from aoetl.devstack import ServiceSupervisor
from aoetl.devstack.errors import StackStartupError
from tests.helpers import wait_until

pytestmark = pytest.mark.unit

MODULE = "tests.support.tiny_service"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_replicas_start_with_env_and_logs_then_stop_gracefully(tmp_path: Path) -> None:
    supervisor = ServiceSupervisor(
        tmp_path, env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "TINY_SERVICE_DIR": str(tmp_path)}
    )
    started = supervisor.start("tiny", 2, module=MODULE, args=["--flag"])

    assert [p.replica for p in started] == [0, 1]
    assert len({p.http_port for p in started}) == 2
    wait_until(
        lambda: all((tmp_path / f"tiny-{p.replica}.started").exists() for p in started),
        20,
        message="replicas up",
    )
    assert (tmp_path / "tiny-0.started").read_text() == "127.0.0.1:1"
    assert "args=['--flag']" in Path(started[0].log).read_text()
    # A second supervisor (another process in real life) sees the recorded replicas.
    assert {p.pid for p in ServiceSupervisor(tmp_path).alive("tiny")} == {p.pid for p in started}

    ServiceSupervisor(tmp_path).stop(timeout=10)

    assert all(_gone(p.pid) for p in started)
    assert (tmp_path / "tiny-1.stopped").read_text() == "graceful"
    assert supervisor.processes() == []


def test_replica_ignoring_sigterm_is_killed_after_the_deadline(tmp_path: Path) -> None:
    with ServiceSupervisor(
        tmp_path, env={"TINY_SERVICE_DIR": str(tmp_path), "TINY_SERVICE_IGNORE_SIGTERM": "1"}
    ) as sup:
        (proc,) = sup.start("stubborn", module=MODULE)
        wait_until(lambda: (tmp_path / "stubborn-0.started").exists(), 20, message="replica up")
        sup.stop(timeout=0.5)

        assert _gone(proc.pid)
        assert not (tmp_path / "stubborn-0.stopped").exists()


def test_more_replicas_get_new_indexes(tmp_path: Path) -> None:
    with ServiceSupervisor(tmp_path, env={"TINY_SERVICE_DIR": str(tmp_path)}) as sup:
        sup.start("tiny", module=MODULE)
        (second,) = sup.start("tiny", module=MODULE)
        assert second.replica == 1
        assert len(sup.alive("tiny")) == 2
    assert sup.alive() == []


def test_wait_ready_polls_ready_endpoints_and_fails_fast_on_a_crashed_replica(tmp_path: Path) -> None:
    with ServiceSupervisor(tmp_path, env={"TINY_SERVICE_DIR": str(tmp_path)}) as sup:
        replicas = sup.start("tiny", 2, module=MODULE)
        sup.wait_ready(replicas, timeout=20)

        crashed = sup.start("broken", module="tests.support.no_such_module")
        with pytest.raises(StackStartupError, match="No module named"):
            sup.wait_ready(crashed, timeout=20)
