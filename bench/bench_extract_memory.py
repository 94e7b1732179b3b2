"""Peak memory of reading a CSV split stays flat as the file grows (not a test).

Generates CSV files of N and 10N rows, then reads each as ONE split (the worst case for memory) in a fresh
subprocess, and prints one JSON object per size with peak RSS and throughput:

    python bench/bench_extract_memory.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,name,email,amount,created_at,comment\n")
        for i in range(rows):
            created = f"2024-01-01T00:00:{i % 60:02d}"
            f.write(f"{i},name {i},user{i}@example.com,{i * 0.37:.2f},{created},note {i % 97}\n")


def measure(path: Path, batch_rows: int) -> dict[str, object]:
    """Runs in the child: read every split of the file and report peak RSS."""
    sys.path.insert(0, str(ROOT))
    from shared.connectors import plan_splits, read_split
    from shared.spec.models import CsvSource

    source = CsvSource(path=str(path))
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    rows = batches = 0
    for split in plan_splits(source, 1):
        for table in read_split(source, split, batch_rows):
            rows += table.num_rows
            batches += 1
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return {
        "rows": rows,
        "batches": batches,
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rss_growth_while_reading_mib": round((peak_kib - baseline_kib) / 1024, 1),
        "seconds": round(seconds, 2),
        "rows_per_s": int(rows / seconds) if seconds else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="N; files of N and 10N rows are read")
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch_rows)))
        return
    with tempfile.TemporaryDirectory(prefix="aoetl-bench-") as tmp:
        for rows in (args.rows, args.rows * 10):
            path = Path(tmp) / f"rows_{rows}.csv"
            generate(path, rows)
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(path), "--batch-rows", str(args.batch_rows)],
                check=True,
                capture_output=True,
                text=True,
            )
            print(child.stdout.strip(), flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
