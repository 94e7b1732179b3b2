"""PostgreSQL sink append throughput against ``psql \\copy`` of the same rows, in the same run.

Generates N rows x 10 columns (bigint, double, text, boolean, date, timestamptz, numeric), then for each of
``--repeat`` rounds: appends them through ``PostgresSink.write`` (ledger row + ADBC binary COPY in one
transaction) into a fresh table, and ``psql \\copy``s a CSV file of the same rows into a table of the same
shape. Prints one JSON object with the median rows/s of each and their ratio (sink / psql).

    AOETL_POSTGRES_DSN=postgresql://... .venv/bin/python bench/bench_sink_postgres.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from services.load.sinks.postgres import PostgresSink
from shared.spec.models import PostgresDestination


def generate(rows: int) -> pa.Table:
    """Vectorized (no Python loop per row) so generation does not dominate the run."""
    ids = pa.array(range(rows), pa.int64())

    def uniform(scale: float) -> pa.Array:
        return pc.multiply(pc.random(rows), scale)

    return pa.table(
        {
            "id": ids,
            "account": pc.cast(pc.floor(uniform(2**40)), pa.int64()),
            "price": uniform(1000.0),
            "ratio": pc.random(rows),
            "name": pc.binary_join_element_wise("customer-", pc.cast(ids, pa.string()), ""),
            "region": pc.binary_join_element_wise(
                "region-", pc.cast(pc.bit_wise_and(ids, 63), pa.string()), ""
            ),
            "active": pc.greater(pc.random(rows), 0.5),
            "day": pc.cast(pc.cast(pc.floor(uniform(20000)), pa.int32()), pa.date32()),
            "at": pc.cast(pc.cast(pc.floor(uniform(1.7e15)), pa.int64()), pa.timestamp("us", tz="UTC")),
            "amount": pc.cast(pc.round(uniform(10000.0), 2), pa.decimal128(12, 2)),
        }
    )


def bench_sink(dsn: str, table: pa.Table, batch_rows: int) -> float:
    name = f"bench_sink_{uuid.uuid4().hex[:8]}"
    sink = PostgresSink(PostgresDestination(table=name), dsn=dsn)
    try:
        sink.write("warmup", "warmup:0", table.slice(0, 1))  # connect + create the table outside the clock
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {name}")
        started = time.perf_counter()
        for seq, offset in enumerate(range(0, table.num_rows, batch_rows)):
            sink.write("bench", f"bench:{seq}", table.slice(offset, batch_rows))
        elapsed = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute(f"SELECT count(*) FROM {name}").fetchone() == (table.num_rows,)
            conn.execute(f"DROP TABLE {name}")
        return elapsed
    finally:
        sink.close()


def bench_psql(dsn: str, csv_path: Path, rows: int, template: str) -> float:
    name = f"bench_psql_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} ({template})")
    started = time.perf_counter()
    subprocess.run(
        [
            "psql",
            dsn,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            f"\\copy {name} FROM '{csv_path}' WITH (FORMAT csv)",
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {name}").fetchone() == (rows,)
        conn.execute(f"DROP TABLE {name}")
    return elapsed


# The same shape the sink creates for ``generate``'s schema (see services/load/sinks/pg_types.py).
TEMPLATE = (
    "id bigint, account bigint, price double precision, ratio double precision, name text, region text,"
    " active boolean, day date, at timestamp with time zone, amount numeric(12,2)"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("AOETL_POSTGRES_DSN"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=1_000_000, help="rows per sink.write call")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("give --dsn or set AOETL_POSTGRES_DSN")

    table = generate(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "rows.csv"
        pa_csv.write_csv(table, csv_path, pa_csv.WriteOptions(include_header=False))
        sink_s, psql_s = [], []
        for _ in range(args.repeat):  # interleaved so both see the same server state
            sink_s.append(bench_sink(args.dsn, table, args.batch_rows))
            psql_s.append(bench_psql(args.dsn, csv_path, args.rows, TEMPLATE))
    sink_rate = args.rows / statistics.median(sink_s)
    psql_rate = args.rows / statistics.median(psql_s)
    print(
        json.dumps(
            {
                "benchmark": "postgres_sink_append",
                "rows": args.rows,
                "columns": table.num_columns,
                "batch_rows": args.batch_rows,
                "repeat": args.repeat,
                "sink_seconds": [round(s, 3) for s in sink_s],
                "psql_copy_seconds": [round(s, 3) for s in psql_s],
                "sink_rows_per_s": round(sink_rate),
                "psql_copy_rows_per_s": round(psql_rate),
                "ratio_sink_to_psql": round(sink_rate / psql_rate, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
