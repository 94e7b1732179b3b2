"""The dlt peer of ``bench/bench_peers.py``: one load of the bench CSV into PostgreSQL with dlt, as a whole
process run by the peers' own venv (``.state/peers-venv``), so dlt and its dependencies never enter the
project's venv and aoetl is never imported here.

The same transforms as the aoetl spec (``bench.bench_pipeline.spec_for``): cast id/qty to int64 and
amount/price/score to float64, keep ``status <> 'cancelled'``, derive ``total = amount * qty``.

    --mode arrow: pyarrow record batches (cast, filter and derive with pyarrow.compute), dlt's csv loader
                  (``loader_file_format="csv"``, PostgreSQL COPY);
    --mode dicts: the same rows as Python dicts through dlt's default normalizer and loader file format.

Prints one JSON line: the pipeline's own seconds (extract -> load done) and the rows it yielded.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

INT_COLUMNS = ("id", "qty")
FLOAT_COLUMNS = ("amount", "price", "score")
DICT_CHUNK_ROWS = 10_000  # dlt takes lists of items; one dict at a time would only add generator overhead


def arrow_tables(path: Path) -> Iterator[object]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    # Every column read as text, then cast explicitly: the cast is part of the measured work, as in aoetl.
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=16 << 20),
        convert_options=pacsv.ConvertOptions(column_types=_all_strings(path, pa)),
    )
    for batch in reader:
        table = pa.Table.from_batches([batch])
        for name in INT_COLUMNS:
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(table[name], pa.int64())
            )
        for name in FLOAT_COLUMNS:
            column = pc.cast(table[name], pa.float64())
            table = table.set_column(table.schema.get_field_index(name), name, column)
        table = table.filter(pc.not_equal(table["status"], "cancelled"))
        yield table.append_column("total", pc.multiply(table["amount"], pc.cast(table["qty"], pa.float64())))


def _all_strings(path: Path, pa: object) -> dict[str, object]:
    with path.open() as fh:
        header = next(csv.reader(fh))
    return {name: pa.string() for name in header}  # type: ignore[attr-defined]


def dict_rows(path: Path) -> Iterator[list[dict[str, object]]]:
    with path.open(newline="") as fh:
        chunk: list[dict[str, object]] = []
        for row in csv.DictReader(fh):
            if row["status"] == "cancelled":
                continue
            record: dict[str, object] = dict(row)
            for name in INT_COLUMNS:
                record[name] = int(row[name])
            for name in FLOAT_COLUMNS:
                record[name] = float(row[name])
            record["total"] = record["amount"] * record["qty"]  # type: ignore[operator]
            chunk.append(record)
            if len(chunk) == DICT_CHUNK_ROWS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def with_password(dsn: str) -> str:
    """dlt's PostgreSQL credentials require a password; the dev stack's server trusts local connections and
    ignores it, so a DSN without one gets a placeholder."""
    parts = urlsplit(dsn)
    if parts.password is not None or not parts.username:
        return dsn
    netloc = f"{parts.username}:unused@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("arrow", "dicts"), required=True)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--dataset", required=True, help="the PostgreSQL schema dlt loads into")
    parser.add_argument("--table", required=True)
    parser.add_argument("--pipelines-dir", type=Path, required=True)
    args = parser.parse_args()

    import dlt

    started = time.perf_counter()
    rows = 0

    def counted(items: Iterator[object]) -> Iterator[object]:
        nonlocal rows
        for item in items:
            rows += item.num_rows if hasattr(item, "num_rows") else len(item)  # type: ignore[arg-type]
            yield item

    items = arrow_tables(args.csv) if args.mode == "arrow" else dict_rows(args.csv)
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_peers_{args.mode}_{args.table}",
        pipelines_dir=str(args.pipelines_dir),
        destination=dlt.destinations.postgres(credentials=with_password(args.dsn)),
        dataset_name=args.dataset,
    )
    options = {"loader_file_format": "csv"} if args.mode == "arrow" else {}
    info = pipeline.run(
        dlt.resource(counted(items), name=args.table, write_disposition="append"),
        table_name=args.table,
        **options,
    )
    info.raise_on_failed_jobs()
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
