"""Metrics of the orchestrator (on the process-wide registry, next to the ``aoetl_*`` metrics every
service has).

``aoetl_planning_seconds`` is the orchestrator's own work on one request (parameters, spec policy, split
planning; the LLM planner included when a request is an intent), not the time the request waited in the
topic before it: with many runs submitted at once the wait is most of what a user sees, and it says the
orchestrator needs replicas, while this says whether planning itself got slow.
"""

from __future__ import annotations

from prometheus_client import Histogram

_COARSE = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # an intent's model call

PLANNING_SECONDS = Histogram(
    "aoetl_planning_seconds",
    "Time the orchestrator spent validating and planning one pipeline request",
    # fine below 25 ms, where a request without a model is planned: the bench reads quantiles as bucket
    # bounds, and with 10 -> 25 ms as one bucket it could not tell a p99 of 11 ms from one of 24 ms
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, *_COARSE),
)
