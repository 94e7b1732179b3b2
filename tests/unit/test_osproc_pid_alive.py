"""Regression (found by the fault tests): a process inside ``execve`` briefly has an empty command line,
and ``pid_alive`` took that for PID reuse, so a freshly started replica was reported as "exited during
startup" (about once in 70 spawns on a loaded machine)."""

from __future__ import annotations

import os
from typing import Any

import psutil
import pytest

import aoetl.devstack.osproc as osproc

pytestmark = pytest.mark.unit


class StartingProcess:
    """Like ``psutil.Process`` of a process that is just exec'ing: empty command line at first."""

    def __init__(self, pid: int, empty_reads: int):
        self.pid, self.empty_reads = pid, empty_reads

    def status(self) -> str:
        return psutil.STATUS_RUNNING

    def cmdline(self) -> list[str]:
        if self.empty_reads:
            self.empty_reads -= 1
            return []
        return ["python", "-m", "services.transform"]


def test_a_process_inside_exec_is_still_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(osproc.psutil, "Process", lambda pid: StartingProcess(pid, empty_reads=2))
    assert osproc.pid_alive(os.getpid(), cmdline_marker="services.transform")


def test_another_program_on_the_pid_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    def other(pid: int) -> Any:
        process = StartingProcess(pid, empty_reads=0)
        process.cmdline = lambda: ["/usr/sbin/sshd"]  # type: ignore[method-assign]
        return process

    monkeypatch.setattr(osproc.psutil, "Process", other)
    assert not osproc.pid_alive(os.getpid(), cmdline_marker="services.transform")
