"""Metrics of the orchestrator (on the process-wide registry, next to the ``aoetl_*`` metrics every
service has).

``aoetl_planning_seconds`` is the orchestrator's own work on one request (parameters, spec policy, split
planning; the LLM planner included when a request is an intent), not the time the request waited in the
topic before it: with many runs submitted at once the wait is most of what a user sees, and it says the
orchestrator needs replicas, while this says whether planning itself got slow.

``aoetl_planning_cpu_seconds`` is the CPU time of the loop thread over the same span (``time.thread_time``).
Wall time stays the measure; the CPU view tells its tail apart: on a host whose cores are shared by busier
processes, the thread is taken off the CPU in the middle of a request and waits its turn. Measured with
10,000 concurrent small runs on 2 cores (bench/bench_concurrent.py): of the 126 requests over 10 ms,
the thread waited runnable on the run queue (``/proc/thread-self/schedstat``) for 3.55 s of their 4.17 s,
garbage collection took 0.46 s, their CPU time was ~1 ms each; CPU p99 1.3 ms against wall p99 12.5 ms.
A CPU tail of its own is work to cut; a wall tail over a flat CPU one is the host's contention.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Histogram

_COARSE = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # an intent's model call
# fine below 25 ms, where a request without a model is planned: the bench reads quantiles as bucket
# bounds, and with 10 -> 25 ms as one bucket it could not tell a p99 of 11 ms from one of 24 ms
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, *_COARSE)

PLANNING_SECONDS = Histogram(
    "aoetl_planning_seconds",
    "Time the orchestrator spent validating and planning one pipeline request",
    buckets=_BUCKETS,
)
PLANNING_CPU_SECONDS = Histogram(
    "aoetl_planning_cpu_seconds",
    "CPU time of the orchestrator's loop thread while validating and planning one pipeline request",
    buckets=_BUCKETS,
)


@contextmanager
def planning_timed() -> Iterator[None]:
    """Observe the block's wall time and its thread's CPU time, a failed block's too."""
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        PLANNING_CPU_SECONDS.observe(cpu)
        PLANNING_SECONDS.observe(wall)
