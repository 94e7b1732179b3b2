"""The pure figures of ``bench/bench_concurrent.py``: results counted per run, percentiles, medians over
rounds, the verdict on a round and the printed table. Kept apart from the measuring (which needs a running
stack) so tests/unit/test_bench_concurrent.py checks them without one."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

ROWS_PER_RUN = 3


def count_results(run_ids: Iterable[str], keys: Iterable[str]) -> dict:
    """How many results each submitted run got, from the result records' keys (the run id): the runs with
    exactly one, the missing ones, the duplicated ones (run id -> count) and results of runs not
    submitted (another writer's, or a wrong key)."""
    wanted = set(run_ids)
    seen = Counter(keys)
    return {
        "exactly_one": sum(1 for r in wanted if seen[r] == 1),
        "missing": sorted(r for r in wanted if seen[r] == 0),
        "duplicates": {r: n for r, n in sorted(seen.items()) if r in wanted and n > 1},
        "unexpected": sum(n for r, n in seen.items() if r not in wanted),
    }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in [0, 100])."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, float | int | None]:
    """p50 / p99 / max in milliseconds, and how many values."""
    ordered = sorted(seconds)
    if not ordered:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 1),
        "p99_ms": round(percentile(ordered, 99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def planning_latencies(submitted: Mapping[str, datetime], planned: Mapping[str, datetime]) -> list[float]:
    """Seconds from each request's ``submitted_at`` to its run's RUN_PLANNED event (runs with both)."""
    return [(planned[r] - at).total_seconds() for r, at in submitted.items() if r in planned]


def medians(rounds: Sequence[Mapping], keys: Sequence[str]) -> dict[str, float | None]:
    """Per key: the median over the rounds that have a number for it (dotted keys reach into dicts)."""

    def get(figures: Mapping, dotted: str) -> object:
        value: object = figures
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    out: dict[str, float | None] = {}
    for key in keys:
        values = [v for r in rounds if isinstance(v := get(r, key), int | float)]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def round_ok(figures: Mapping) -> bool:
    """Every run got exactly one result, every one COMPLETED, and the table holds exactly their rows."""
    counted = figures["results"]
    return (
        counted["exactly_one"] == figures["runs"]
        and not counted["missing"]
        and not counted["duplicates"]
        and figures["statuses"] == {"COMPLETED": figures["runs"]}
        and figures["rows_in_table"] == ROWS_PER_RUN * figures["runs"]
    )


SUMMARY_KEYS = (
    "submit_s",
    "all_results_s",
    "results_per_s",
    "planning.p50_ms",
    "planning.p99_ms",
    "planning_own.p50_ms",
    "planning_own.p99_ms",
    "planning_own_cpu.p50_ms",
    "planning_own_cpu.p99_ms",
    "result_latency.p50_ms",
    "result_latency.p99_ms",
)


def own_planning_quantiles(before: Mapping[float, float], after: Mapping[float, float]) -> dict:
    """p50/p99 of the orchestrators' own planning time over a round, as the upper bound of the histogram
    bucket the quantile falls in (an upper estimate: what a Prometheus user would read)."""
    from bench.prom import quantiles_ms

    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = max(counts.values(), default=0.0)
    return {"n": int(total), **quantiles_ms(counts, {"p50_ms": 0.5, "p99_ms": 0.99})}


def table_text(report: Mapping) -> str:
    lines = [
        "| orchestrators | submit s | all results s | results/s | planning p50 / p99 ms (queued) "
        "| own planning p50 / p99 ms | own planning CPU p50 / p99 ms | RSS MiB | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for replicas, figures in report["by_replicas"].items():
        m = figures["median"]
        rss = " / ".join(str(v) for v in figures["orchestrator_peak_rss_mib"].values())
        ok = all(r["ok"] for r in figures["rounds"])
        lines.append(
            f"| {replicas} | {m['submit_s']} | {m['all_results_s']} | {m['results_per_s']} | "
            f"{m['planning.p50_ms']} / {m['planning.p99_ms']} | "
            f"{m['planning_own.p50_ms']} / {m['planning_own.p99_ms']} | "
            f"{m.get('planning_own_cpu.p50_ms')} / {m.get('planning_own_cpu.p99_ms')} | {rss} | {ok} |"
        )
    return "\n".join(lines)
