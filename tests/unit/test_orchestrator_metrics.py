"""The orchestrator's planning histograms: wall time and the loop thread's CPU time of one span, observed
once each, a failed span's too; time spent off the CPU (here: asleep) is wall time, not CPU time."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from services.orchestrator import metrics

pytestmark = pytest.mark.unit


def _figures(name: str) -> tuple[float, float]:
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    return count, REGISTRY.get_sample_value(f"{name}_sum") or 0.0


def test_a_span_off_the_cpu_is_wall_time_not_cpu_time() -> None:
    wall_before, cpu_before = _figures("aoetl_planning_seconds"), _figures("aoetl_planning_cpu_seconds")
    with metrics.planning_timed():
        time.sleep(0.05)
    wall, cpu = _figures("aoetl_planning_seconds"), _figures("aoetl_planning_cpu_seconds")
    assert wall[0] == wall_before[0] + 1 and cpu[0] == cpu_before[0] + 1
    assert wall[1] - wall_before[1] >= 0.05
    assert cpu[1] - cpu_before[1] < 0.02  # asleep: the thread used (almost) no CPU


def test_a_failed_span_is_observed_too() -> None:
    before = _figures("aoetl_planning_cpu_seconds")[0], _figures("aoetl_planning_seconds")[0]
    with pytest.raises(RuntimeError), metrics.planning_timed():
        raise RuntimeError("planning failed")
    after = _figures("aoetl_planning_cpu_seconds")[0], _figures("aoetl_planning_seconds")[0]
    assert after == (before[0] + 1, before[1] + 1)
