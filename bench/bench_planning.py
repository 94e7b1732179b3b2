"""Latency of planning one declarative pipeline request, as the orchestrator does it for every run:
``parse_spec`` validation + ``plan_splits`` on a local CSV file + task emission (``RunBook.on_request``).

The baseline in the same run is bare ``parse_spec`` on the same spec, so the printed ``ratio_p50`` says how
much split planning and task emission add to validation on this machine. Each iteration plans a new run
(fresh run id); requests are built before timing starts. Output is one JSON object.

    .venv/bin/python bench/bench_planning.py [--iterations 1000] [--rows 200000] [--parallelism 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.orchestrator.runs import RunBook
from shared.connectors import plan_splits
from shared.contracts import PipelineRequest, Split
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from shared.spec.models import PipelineSpec


def make_csv(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("order_id,customer,amount,status,order_date\n")
        f.writelines(
            f"{i},customer{i % 997},{i * 1.25:.2f},{'shipped' if i % 3 else 'cancelled'},"
            f"2024-01-{i % 28 + 1:02d}\n"
            for i in range(rows)
        )
    return path


def spec_data(path: Path, parallelism: int) -> dict[str, Any]:
    return {
        "name": "orders",
        "source": {"type": "csv", "path": str(path)},
        "transforms": [
            {"op": "cast", "columns": {"order_id": "int64", "amount": "float64", "order_date": "date"}},
            {"op": "filter", "expr": "status <> 'cancelled'"},
            {"op": "mask", "columns": ["customer"]},
        ],
        "quality": [
            {"rule": "not_null", "columns": ["order_id"], "on_fail": "quarantine"},
            {"rule": "range", "column": "amount", "min": 0, "on_fail": "warn"},
        ],
        "destination": {"type": "postgres", "table": "orders", "mode": "merge", "keys": ["order_id"]},
        "run": {"parallelism": parallelism},
    }


def splits_for(spec: PipelineSpec, payload: bytes | None) -> list[Split]:
    return plan_splits(spec.source, spec.run.parallelism, payload=payload, batch_rows=spec.run.batch_rows)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(samples_ms), 4),
        "p99_ms": round(cuts[98], 4),
        "max_ms": round(max(samples_ms), 4),
    }


def timed(iterations: int, step: Callable[[int], object]) -> list[float]:
    samples: list[float] = []
    for i in range(iterations):
        started = time.perf_counter()
        step(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the local CSV file")
    parser.add_argument("--parallelism", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aoetl-bench-planning-") as tmp:
        path = make_csv(Path(tmp) / "orders.csv", args.rows)
        data = spec_data(path, args.parallelism)
        book = RunBook(splits_for, lambda spec, rows: [])
        requests = [PipelineRequest(intent="bench") for _ in range(args.iterations)]
        now = datetime.now(UTC)
        tasks: list[int] = []

        def plan_request(i: int) -> None:
            spec = parse_spec(data)
            outputs = book.on_request(requests[i], spec, now)
            tasks.append(sum(1 for o in outputs if o.topic == Topics.TASKS))

        # Warm up both paths (imports, caches, the file in the page cache) before measuring.
        for _ in range(20):
            parse_spec(data)
        RunBook(splits_for, lambda spec, rows: []).on_request(
            PipelineRequest(intent="warm"), parse_spec(data), now
        )

        baseline = timed(args.iterations, lambda i: parse_spec(data))
        planning = timed(args.iterations, plan_request)
        size = path.stat().st_size

    result = {
        "bench": "planning",
        "iterations": args.iterations,
        "file_bytes": size,
        "parallelism": args.parallelism,
        "tasks_per_run": statistics.mode(tasks),
        "planning": percentiles(planning),
        "baseline_parse_spec": percentiles(baseline),
    }
    result["ratio_p50"] = round(result["planning"]["p50_ms"] / result["baseline_parse_spec"]["p50_ms"], 2)  # type: ignore[index]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
