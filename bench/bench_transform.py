"""Throughput of the transform engine on a 1M x 10 batch: cast + filter + derive.

The same steps written directly in polars (no spec, no checks, no DuckDB) run in the same process as a
baseline, so the printed ``ratio`` (engine rows/s over baseline rows/s) says what the engine's generality
and strictness cost on this machine, independent of how fast the machine is.

    .venv/bin/python bench/bench_transform.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import date, datetime

import polars as pl
import pyarrow as pa
from pydantic import TypeAdapter

from shared.spec.models import TransformStep
from shared.transform.engine import TransformEngine

STEPS = [
    {
        "op": "cast",
        "columns": {
            "id": "int64",
            "amount": "float64",
            "qty": "int64",
            "day": "date",
            "seen_at": "timestamp",
            "active": "boolean",
        },
    },
    {"op": "filter", "expr": "amount > 100 AND country <> 'US' AND active"},
    {"op": "derive", "column": "total", "expr": "amount * qty"},
]


def make_batch(rows: int, seed: int = 42) -> pa.Table:
    """Ten columns as an extractor delivers them from CSV: mostly text. Pseudo-random from hashes of the
    row number, so the batch is the same on every run."""

    def draw(salt: int, modulo: int) -> pl.Expr:
        return pl.int_range(0, rows, dtype=pl.UInt64).hash(seed + salt) % modulo

    def pick(salt: int, choices: list[str]) -> pl.Expr:
        return pl.lit(pl.Series(choices)).gather(draw(salt, len(choices)))

    frame = pl.select(
        id=pl.int_range(0, rows).cast(pl.String),
        amount=(draw(1, 100_000) / 100).cast(pl.String),
        qty=(draw(2, 19) + 1).cast(pl.String),
        day=(pl.lit(date(2020, 1, 1)) + pl.duration(days=draw(3, 3000))).dt.strftime("%Y-%m-%d"),
        seen_at=(pl.lit(datetime(2020, 1, 1)) + pl.duration(seconds=draw(4, 10**8))).dt.strftime(
            "%Y-%m-%dT%H:%M:%S"
        ),
        active=pick(5, ["true", "false"]),
        country=pick(6, ["FR", "DE", "US", "ES"]),
        name=pick(7, ["ann", "bo", "carla", "dmitri", "eve"]),
        email=pick(8, ["a@x.org", "b@y.com", "c@z.net"]),
        score=draw(9, 10**6).cast(pl.Float64) / 10**6,
    )
    return frame.to_arrow()


def polars_baseline(table: pa.Table) -> pa.Table:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    out = (
        frame.with_columns(
            pl.col("id").str.strip_chars().cast(pl.Int64),
            pl.col("amount").str.strip_chars().cast(pl.Float64),
            pl.col("qty").str.strip_chars().cast(pl.Int64),
            pl.col("day").str.strptime(pl.Date, "%Y-%m-%d"),
            pl.col("seen_at").str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S"),
            pl.col("active").str.to_lowercase().replace_strict({"true": True, "false": False}),
        )
        .filter((pl.col("amount") > 100) & (pl.col("country") != "US") & pl.col("active"))
        .with_columns(total=pl.col("amount") * pl.col("qty"))
    )
    return out.to_arrow()


def best_seconds(run: Callable[[], pa.Table], repeat: int) -> tuple[float, int]:
    best, rows_out = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows_out = run().num_rows
        best = min(best, time.perf_counter() - start)
    return best, rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    table = make_batch(args.rows)
    engine = TransformEngine(TypeAdapter(list[TransformStep]).validate_python(STEPS))
    engine_s, engine_rows = best_seconds(lambda: engine.apply(table), args.repeat)
    baseline_s, baseline_rows = best_seconds(lambda: polars_baseline(table), args.repeat)
    if engine_rows != baseline_rows:
        raise SystemExit(f"engine kept {engine_rows} rows, baseline {baseline_rows}: not the same work")
    engine.close()
    print(
        json.dumps(
            {
                "bench": "transform cast+filter+derive",
                "rows": args.rows,
                "columns": table.num_columns,
                "rows_out": engine_rows,
                "engine_s": round(engine_s, 4),
                "engine_rows_per_s": round(args.rows / engine_s),
                "polars_baseline_s": round(baseline_s, 4),
                "polars_baseline_rows_per_s": round(args.rows / baseline_s),
                "ratio": round(baseline_s / engine_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
