"""Test data for the sink tests, and per-column checksums computed two independent ways: in Python from
the input batches, and in SQL inside the destination. Equal checksums mean every value arrived once."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa

EPOCH_DAY = dt.date(1970, 1, 1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAMES = ["alpha", "b,eta", 'quo"te', "new\nline", "ünï©ødé", "", "tab\there", "back\\slash"]

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("qty", pa.int64()),
        ("price", pa.float64()),
        ("name", pa.string()),
        ("active", pa.bool_()),
        ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("amount", pa.decimal128(12, 2)),
    ]
)


def sample_table(rows: int, *, seed: int, start_id: int = 0) -> pa.Table:
    """Rows with every mapped type, nulls in every non-key column, and strings that break naive CSV."""
    rng = random.Random(seed)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.1 else value

    data: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for i in range(rows):
        data["id"].append(start_id + i)
        data["qty"].append(maybe(rng.randint(-(2**40), 2**40)))
        data["price"].append(maybe(rng.random() * 1000))
        data["name"].append(maybe(f"{rng.choice(_NAMES)}-{rng.randint(0, 99)}" if rng.random() < 0.9 else ""))
        data["active"].append(maybe(rng.random() < 0.5))
        data["day"].append(maybe(EPOCH_DAY + dt.timedelta(days=rng.randint(0, 20000))))
        data["at"].append(maybe(EPOCH + dt.timedelta(microseconds=rng.randint(0, 2**50))))
        data["amount"].append(maybe(Decimal(rng.randint(-(10**9), 10**9)) / 100))
    return pa.table(data, schema=SCHEMA)


def expected_checksums(
    tables: Iterable[pa.Table], columns: Sequence[str] = tuple(SCHEMA.names)
) -> dict[str, Any]:
    """Python-side checksums over the rows of ``tables``."""
    values: dict[str, list[Any]] = {c: [] for c in columns}
    rows = 0
    for table in tables:
        rows += table.num_rows
        for c in columns:
            values[c].extend(v for v in table.column(c).to_pylist() if v is not None)
    out: dict[str, Any] = {"rows": rows}
    for c in columns:
        present = values[c]
        out[f"{c}.count"] = len(present)
        kind = SCHEMA.field(c).type
        if pa.types.is_integer(kind):
            out[f"{c}.sum"] = sum(present)
        elif pa.types.is_floating(kind):
            out[f"{c}.sum"] = math.fsum(present)
        elif pa.types.is_string(kind):
            out[f"{c}.md5"] = hashlib.md5("\n".join(sorted(present)).encode()).hexdigest()
        elif pa.types.is_boolean(kind):
            out[f"{c}.true"] = sum(1 for v in present if v)
        elif pa.types.is_date(kind):
            out[f"{c}.days"] = sum((v - EPOCH_DAY).days for v in present)
        elif pa.types.is_timestamp(kind):
            out[f"{c}.us"] = sum((v - EPOCH) // dt.timedelta(microseconds=1) for v in present)
        elif pa.types.is_decimal(kind):
            out[f"{c}.sum"] = sum(present, Decimal(0))
    return out


def checksum_query(
    table_sql: str, dialect: Literal["postgres", "duckdb"], columns: Sequence[str] = tuple(SCHEMA.names)
) -> tuple[str, list[str]]:
    """SQL computing the same checksums inside the destination, and the metric name of each output."""
    names = ["rows"]
    exprs = ["count(*)"]
    for c in columns:
        q = f'"{c}"'
        names.append(f"{c}.count")
        exprs.append(f"count({q})")
        kind = SCHEMA.field(c).type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            names.append(f"{c}.sum")
            exprs.append(f"sum({q})")
        elif pa.types.is_string(kind):
            names.append(f"{c}.md5")
            collate = ' COLLATE "C"' if dialect == "postgres" else ""
            exprs.append(f"md5(coalesce(string_agg({q}, chr(10) ORDER BY {q}{collate}), ''))")
        elif pa.types.is_boolean(kind):
            names.append(f"{c}.true")
            exprs.append(f"count(*) FILTER (WHERE {q})")
        elif pa.types.is_date(kind):
            names.append(f"{c}.days")
            exprs.append(
                f"sum({q} - date '1970-01-01')"
                if dialect == "postgres"
                else f"sum(datediff('day', DATE '1970-01-01', {q}))"
            )
        elif pa.types.is_timestamp(kind):
            names.append(f"{c}.us")
            exprs.append(
                f"sum((extract(epoch FROM {q}) * 1000000)::bigint)"
                if dialect == "postgres"
                else f"sum(epoch_us({q}))"
            )
    return f"SELECT {', '.join(exprs)} FROM {table_sql}", names


def as_metrics(row: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """Normalize the SQL result so it compares with ``expected_checksums`` (numbers as int/float/Decimal)."""
    out: dict[str, Any] = {}
    for name, value in zip(names, row, strict=True):
        if name.startswith("price."):
            value = float(value) if value is not None else 0.0
        elif name.startswith("amount.") and value is not None:
            value = Decimal(value)
        elif isinstance(value, Decimal) and value == value.to_integral_value():
            value = int(value)
        out[name] = 0 if value is None else value
    return out
