"""File sources on object storage, against a real S3-compatible server (S3Proxy, ``tests.support.s3_server``):
csv, jsonl and parquet objects planned into splits and read back exactly (every row once), a large object
cut into several byte-range splits, a glob over a prefix, and the policy where the connector acts (roots,
an unknown or wrong credential, the endpoint through the egress policy), with no secret in any error."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.connectors import SourceNotFoundError, plan_splits, read_split
from shared.contracts import SplitKind
from shared.policy.errors import PolicyViolation
from shared.spec.models import CsvSource, JsonlSource, ParquetSource, Source
from tests.support.s3_server import (  # noqa: F401 - s3_server: the session fixture
    S3Server,
    declare_connections,
    new_bucket,
    s3_connection,
    s3_server,
)

pytestmark = pytest.mark.integration

ROWS = 30_000


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """A bucket of this test's own and an ``s3`` connection ``lake`` whose roots are its ``in/`` prefix."""
    name = new_bucket(s3_server)
    connections = {
        "lake": s3_connection(s3_server, f"s3://{name}/in"),
        "wrong-key": s3_connection(s3_server, f"s3://{name}", env="AOETL_TEST_S3_WRONG"),
        "metadata": s3_connection(s3_server, f"s3://{name}", endpoint="http://169.254.169.254"),
    }
    declare_connections(monkeypatch, s3_server, connections)
    monkeypatch.setenv("AOETL_TEST_S3_WRONG", f"{s3_server.access_key}:Wrong-Planted-Secret-9z")
    return name


def orders_csv(rows: int) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["id", "name", "amount"])
    for i in range(rows):
        writer.writerow([i, f"name-{i % 311}", f"{i * 0.25:.2f}"])
    return text.getvalue().encode()


def read_all(source: Source, parallelism: int | None, batch_rows: int = 4_000) -> tuple[int, list[pa.Table]]:
    splits = plan_splits(source, parallelism)
    tables = [t for split in splits for t in read_split(source, split, batch_rows)]
    return len(splits), tables


def ids(tables: list[pa.Table]) -> list[int]:
    return sorted(int(v) for t in tables for v in t.column("id").to_pylist())


def test_csv_object_in_several_byte_range_splits(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    s3_server.put(f"{bucket}/in/orders.csv", orders_csv(ROWS))
    source = CsvSource(path=f"s3://{bucket}/in/orders.csv", connection="lake")
    splits = plan_splits(source, 5)
    assert [s.kind for s in splits] == [SplitKind.BYTE_RANGE] * 5
    assert {s.uri for s in splits} == {f"s3://{bucket}/in/orders.csv"}
    count, tables = read_all(source, 5)
    assert count == 5
    assert ids(tables) == list(range(ROWS))  # every row exactly once across the split boundaries
    assert all(t.num_rows <= 4_000 for t in tables)
    assert sum(float(v) for t in tables for v in t.column("amount").to_pylist()) == sum(
        i * 0.25 for i in range(ROWS)
    )


def test_jsonl_glob_over_a_prefix(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    for part in range(3):
        lines = "".join(json.dumps({"id": part * 1000 + i, "v": i % 7}) + "\n" for i in range(1000))
        s3_server.put(f"{bucket}/in/events/part-{part}.jsonl", lines.encode())
    s3_server.put(f"{bucket}/in/events/readme.txt", b"not a match")
    source = JsonlSource(path=f"s3://{bucket}/in/events/*.jsonl", connection="lake")
    splits = plan_splits(source, None)
    assert sorted({s.uri for s in splits}) == [f"s3://{bucket}/in/events/part-{p}.jsonl" for p in range(3)]
    _, tables = read_all(source, None)
    assert ids(tables) == sorted(p * 1000 + i for p in range(3) for i in range(1000))


def test_parquet_object_split_by_row_groups(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    table = pa.table({"id": list(range(ROWS)), "x": [i * 2 for i in range(ROWS)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=5_000)
    s3_server.put(f"{bucket}/in/t.parquet", buffer.getvalue())
    source = ParquetSource(path=f"s3://{bucket}/in/t.parquet", connection="lake")
    count, tables = read_all(source, 3)
    assert count == 3
    assert ids(tables) == list(range(ROWS))
    assert sum(v for t in tables for v in t.column("x").to_pylist()) == sum(i * 2 for i in range(ROWS))


def test_the_policy_where_the_connector_acts(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    s3_server.put(f"{bucket}/outside.csv", b"id\n1\n")
    s3_server.put(f"{bucket}/in/a.csv", b"id\n1\n")
    with pytest.raises(PolicyViolation, match="outside the roots"):
        plan_splits(CsvSource(path=f"s3://{bucket}/outside.csv", connection="lake"), 1)
    with pytest.raises(PolicyViolation, match=r"169\.254\.169\.254"):
        plan_splits(CsvSource(path=f"s3://{bucket}/in/a.csv", connection="metadata"), 1)
    with pytest.raises(SourceNotFoundError, match="object not found"):
        plan_splits(CsvSource(path=f"s3://{bucket}/in/missing.csv", connection="lake"), 1)
    with pytest.raises(SourceNotFoundError, match="ACCESS_DENIED") as refused:
        plan_splits(CsvSource(path=f"s3://{bucket}/in/a.csv", connection="wrong-key"), 1)
    assert "Wrong-Planted-Secret-9z" not in str(refused.value)
    assert s3_server.secret_key not in str(refused.value)
    # a split whose uri was tampered with to leave the roots is refused when read, too
    split = plan_splits(CsvSource(path=f"s3://{bucket}/in/a.csv", connection="lake"), 1)[0]
    moved = split.model_copy(update={"uri": f"s3://{bucket}/outside.csv"})
    with pytest.raises(PolicyViolation, match="outside the roots"):
        list(read_split(CsvSource(path=f"s3://{bucket}/in/a.csv", connection="lake"), moved, 10))
