"""The pure parts of bench/bench_concurrent.py (in bench/concurrent_figures.py): results counted per run,
percentiles, medians, verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.bench_concurrent import spec_for
from bench.concurrent_figures import (
    ROWS_PER_RUN,
    count_results,
    latency_summary,
    medians,
    own_planning_quantiles,
    percentile,
    planning_latencies,
    round_ok,
    table_text,
)
from shared.spec import parse_spec

pytestmark = pytest.mark.unit


def test_count_results_finds_missing_duplicated_and_unexpected_results():
    counted = count_results(["a", "b", "c", "d"], ["a", "b", "b", "zz", "d", "b"])
    assert counted == {"exactly_one": 2, "missing": ["c"], "duplicates": {"b": 3}, "unexpected": 1}


def test_count_results_all_exactly_once():
    runs = [f"r{i}" for i in range(100)]
    counted = count_results(runs, reversed(runs))
    assert counted == {"exactly_one": 100, "missing": [], "duplicates": {}, "unexpected": 0}


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_summary_in_milliseconds_unsorted_input():
    summary = latency_summary([0.003, 0.001, 0.002, 0.250])
    assert summary == {"n": 4, "p50_ms": 2.0, "p99_ms": 250.0, "max_ms": 250.0}
    assert latency_summary([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}


def test_planning_latencies_pair_submit_and_planned_times_by_run():
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    submitted = {"a": t0, "b": t0 + timedelta(seconds=1), "c": t0}
    planned = {"a": t0 + timedelta(milliseconds=5), "b": t0 + timedelta(seconds=1.5), "x": t0}
    assert sorted(planning_latencies(submitted, planned)) == [0.005, 0.5]


def test_medians_over_rounds_with_dotted_keys_and_gaps():
    rounds = [
        {"submit_s": 1.0, "planning": {"p99_ms": 10.0}},
        {"submit_s": 3.0, "planning": {"p99_ms": None}},
        {"submit_s": 2.0, "planning": {"p99_ms": 30.0}},
    ]
    assert medians(rounds, ["submit_s", "planning.p99_ms", "absent.key"]) == {
        "submit_s": 2.0,
        "planning.p99_ms": 20.0,
        "absent.key": None,
    }


def _round(**changes):
    figures = {
        "runs": 2,
        "results": {"exactly_one": 2, "missing": [], "duplicates": {}, "unexpected": 0},
        "statuses": {"COMPLETED": 2},
        "rows_in_table": 2 * ROWS_PER_RUN,
    }
    return {**figures, **changes}


def test_round_ok_only_when_every_run_completed_once_with_its_rows():
    assert round_ok(_round())
    duplicated = {"exactly_one": 1, "missing": [], "duplicates": {"a": 2}, "unexpected": 0}
    assert not round_ok(_round(results=duplicated))
    missing = {"exactly_one": 1, "missing": ["b"], "duplicates": {}, "unexpected": 0}
    assert not round_ok(_round(results=missing))
    assert not round_ok(_round(statuses={"COMPLETED": 1, "FAILED": 1}))
    assert not round_ok(_round(rows_in_table=2 * ROWS_PER_RUN + 1))


def test_the_spec_is_valid_and_the_table_lists_each_replica_count():
    spec = parse_spec(spec_for(Path("/tmp/x.csv"), "bench_concurrent_t"))
    assert spec.destination.table == "bench_concurrent_t"
    report = {
        "by_replicas": {
            "1": {
                "median": {
                    "submit_s": 1.5,
                    "all_results_s": 60.0,
                    "results_per_s": 166.7,
                    "planning.p50_ms": 3.0,
                    "planning.p99_ms": 9.0,
                    "planning_own.p50_ms": 1.0,
                    "planning_own.p99_ms": 2.5,
                    "planning_own_cpu.p50_ms": 0.5,
                    "planning_own_cpu.p99_ms": 1.0,
                },
                "orchestrator_peak_rss_mib": {"orchestrator-0": 200.0},
                "rounds": [{"ok": True}],
            }
        }
    }
    assert (
        table_text(report).splitlines()[-1]
        == "| 1 | 1.5 | 60.0 | 166.7 | 3.0 / 9.0 | 1.0 / 2.5 | 0.5 / 1.0 | 200.0 | True |"
    )


def test_own_planning_quantiles_are_the_bucket_bounds_of_the_rounds_counts():

    before = {0.001: 10.0, 0.005: 10.0, 0.01: 10.0, float("inf"): 10.0}
    after = {0.001: 50.0, 0.005: 109.0, 0.01: 110.0, float("inf"): 110.0}  # 100 more: 40, 59, 1 per bucket
    assert own_planning_quantiles(before, after) == {"n": 100, "p50_ms": 5.0, "p99_ms": 5.0}
    assert own_planning_quantiles({}, {}) == {"n": 0, "p50_ms": None, "p99_ms": None}
