"""bench/peak_rss.py and the whole-process timing of bench/peers_common.py, on real child processes: a
process's own peak, not the largest child's so far; a reset mark starts again from the resident size; the
PostgreSQL process titles that are client backends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.peak_rss import PeakRss, is_client_backend, reset_peak, vm_hwm_mib
from bench.peers_common import timed

pytestmark = pytest.mark.unit

GROW = "b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); print('done')"


def test_the_tool_is_its_own_peak_not_the_memory_of_the_bench_it_was_forked_from():
    ballast = bytearray(150 * 2**20)  # the bench holds much more than the small tool will
    ballast[::4096] = b"x" * len(ballast[::4096])
    with PeakRss({}, Path("/no-stack"), interval_s=0.01) as small:
        timed([sys.executable, "-c", GROW.format(mib=20) + "; import time; time.sleep(0.3)"])
    with PeakRss({}, Path("/no-stack"), interval_s=0.01) as big:
        done = timed([sys.executable, "-c", GROW.format(mib=200) + "; import time; time.sleep(0.3)"])
    del ballast
    assert done["stdout"].strip() == "done" and done["process_cpu_s"] >= 0
    assert (big.result["tool"] or 0) > 200 > 150 > (small.result["tool"] or 1e9) > 20


def test_timed_says_why_a_process_failed():
    with pytest.raises(RuntimeError, match="exited 3: out err"):
        timed(["sh", "-c", "printf out; printf ' err' >&2; exit 3"])


def test_reset_peak_starts_the_mark_again_from_the_resident_size():
    grown = bytearray(150 * 2**20)
    grown[::4096] = b"x" * len(grown[::4096])
    del grown
    before = vm_hwm_mib(os.getpid())
    reset_peak(os.getpid())
    after = vm_hwm_mib(os.getpid())
    assert before is not None and after is not None and after < before - 100


def test_vm_hwm_of_a_process_that_is_gone_is_none():
    assert vm_hwm_mib(2**22 + 12345) is None


def test_peak_rss_names_each_service_and_reports_no_backend_without_a_stack(tmp_path: Path):
    with PeakRss({os.getpid(): "bench"}, tmp_path / "no-stack", interval_s=0.01) as rss:
        grown = bytearray(80 * 2**20)
        grown[::4096] = b"x" * len(grown[::4096])
    assert set(rss.result) == {"tool", "bench", "postgres_backend", "postgres_backend_private"}
    assert rss.result["postgres_backend"] is None and rss.result["tool"] is None
    assert (rss.result["bench"] or 0) > 80
    line = rss.timeline(points=4)["bench"]
    assert len(line) == 4 and (line[-1] or 0) > 80  # the last point is the look at the block's end
    del grown


def test_client_backends_are_told_from_auxiliary_processes():
    assert is_client_backend("postgres: postgres aoetl 127.0.0.1(60254) idle ")
    assert is_client_backend("postgres: postgres aoetl [local] COPY")
    assert not is_client_backend("postgres: checkpointer ")
    assert not is_client_backend("postgres: autovacuum launcher ")
    assert not is_client_backend("/usr/lib/postgresql/15/bin/postgres -D /x -p 5432")


def test_a_child_started_before_the_block_is_not_the_tool():
    holder = subprocess.Popen([sys.executable, "-c", GROW.format(mib=120) + "; import time; time.sleep(30)"])
    try:
        while (vm_hwm_mib(holder.pid) or 0) < 120:  # the stack's broker stands for it: large, already there
            time.sleep(0.01)
        with PeakRss({}, Path("/no-stack"), interval_s=0.01) as rss:
            timed([sys.executable, "-c", GROW.format(mib=20) + "; import time; time.sleep(0.3)"])
    finally:
        holder.kill()
        holder.wait()
    assert 20 < (rss.result["tool"] or 1e9) < 120
