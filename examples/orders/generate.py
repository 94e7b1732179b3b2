"""Generate the demo's orders CSVs: realistic, a little messy, and reproducible (seeded)."""

from __future__ import annotations

import argparse
import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

STATUSES = ["paid"] * 6 + ["shipped"] * 3 + ["refunded", "cancelled", "unknown"]


def generate(out_dir: Path, rows: int, files: int, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 1, 1)
    paths = []
    per_file = rows // files
    order_id = 0
    for f in range(files):
        path = out_dir / f"orders-{f:02d}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["order_id", "customer_id", "email", "status", "amount", "quantity", "ordered_at"])
            n = per_file if f < files - 1 else rows - per_file * (files - 1)
            for _ in range(n):
                order_id += 1
                customer = "" if rng.random() < 0.01 else f"C{rng.randint(1, 5000):05d}"
                amount = round(rng.uniform(1, 500), 2) if rng.random() > 0.002 else 25000.0
                ts = start + timedelta(seconds=rng.randint(0, 300 * 86400))
                w.writerow(
                    [
                        order_id,
                        customer,
                        f"user{rng.randint(1, 99999)}@example.com",
                        rng.choice(STATUSES),
                        f"{amount:.2f}",
                        rng.randint(1, 5),
                        ts.isoformat(sep=" "),
                    ]
                )
        paths.append(path)
    return paths


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--files", type=int, default=2)
    a = p.parse_args()
    for path in generate(a.out, a.rows, a.files):
        print(path)
