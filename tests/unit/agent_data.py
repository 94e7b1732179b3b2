"""Messy sample data for the agent's tests: mixed date formats, NA markers, thousands separators,
duplicated keys and PII, written as CSV or JSON Lines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

# Valid Luhn numbers (test cards of the card networks), spaced as people type them.
CARDS = ["4111 1111 1111 1111", "5500 0000 0000 0004", "3400 0000 0000 009", "6011 0000 0000 0004"]
STATUSES = ["shipped", "pending", "cancelled"]
ORDER_HEADER = [
    "order_id",
    "customer_email",
    "phone",
    "card",
    "amount",
    "qty",
    "order_date",
    "created_at",
    "status",
    "zip",
    "active",
]


def order_rows(n: int = 40, *, duplicate_every: int = 10) -> list[list[str]]:
    """``n`` orders plus a repeated copy of every ``duplicate_every``-th order (same order_id)."""
    rows: list[list[str]] = []
    for i in range(1, n + 1):
        day, month = (i % 28) + 1, (i % 12) + 1
        # ISO dates for most rows, day-first for every 4th: one column, two formats.
        order_date = f"2024-{month:02d}-{day:02d}" if i % 4 else f"{day:02d}/{month:02d}/2024"
        amount = f"{1000 + i * 37:,}.50" if i % 5 == 0 else f"{i * 3.25:.2f}"
        qty = ["N/A", "-", ""][i % 3] if i % 7 == 0 else str(i % 9 + 1)
        rows.append(
            [
                str(i),
                f"user{i}@example.com" if i % 11 else "NA",
                f"+1 (555) {100 + i:03d}-{1000 + i:04d}",
                CARDS[i % len(CARDS)],
                amount,
                qty,
                order_date,
                f"2024-{month:02d}-{day:02d} {i % 24:02d}:{i % 60:02d}:00",
                STATUSES[i % 3],
                f"{i:05d}",
                "yes" if i % 2 else "no",
            ]
        )
        if i % duplicate_every == 0:
            rows.append(list(rows[-1]))
    return rows


def write_orders_csv(path: Path, n: int = 40) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(ORDER_HEADER)
        writer.writerows(order_rows(n))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
