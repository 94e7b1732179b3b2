"""Object storage end to end: csv and parquet objects in a bucket of a real S3-compatible server (S3Proxy)
loaded into PostgreSQL by the running services, the csv object cut into several byte-range splits shared
by two extract replicas; counts and checksums exact against the rows the test wrote. The services reach
the server only through the declared ``s3`` connection (its secret in their environment, its endpoint
allow-listed by the egress policy), and a bucket outside the connection's roots is REJECTED."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from services.load.sinks.object_files import ObjectFileSink
from shared.contracts import RunStatus, Stage
from tests.e2e.conftest import System, running_system
from tests.e2e.test_pipelines import (
    assert_completed,
    expected_orders,
    orders_spec,
    run_spec,
    stage,
    write_orders,
)
from tests.support.s3_server import (  # noqa: F401 - s3_server: the session fixture
    S3Server,
    policy_env,
    s3_connection,
    s3_server,
)

pytestmark = pytest.mark.e2e

REPLICAS = {"orchestrator": 1, "extract": 2, "transform": 1, "load": 1}
BUCKET = f"e2e-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def s3_system(
    kafka_bootstrap: str,
    postgres_dsn: str,
    s3_server: S3Server,  # noqa: F811
) -> Iterator[System]:
    s3_server.create_bucket(BUCKET)
    connections = {
        "default": {"env": "AOETL_POSTGRES_DSN"},
        "lake": s3_connection(s3_server, f"s3://{BUCKET}/landing"),
    }
    env = policy_env(s3_server, connections)
    with running_system(kafka_bootstrap, postgres_dsn, REPLICAS, env) as system:
        yield system


def upload(server: S3Server, key: str, data: bytes) -> str:
    return server.put(f"{BUCKET}/{key}", data)


def figures(postgres_dsn: str, table: str) -> dict[str, object]:
    with psycopg.connect(postgres_dsn) as con:
        got = con.execute(
            f"SELECT count(*), sum(id), sum(qty), sum(round(amount * 100)::bigint), "
            f"count(DISTINCT nullif(customer, '')) FROM {table}"
        ).fetchone()
    assert got is not None
    return dict(zip(["count", "sum_id", "sum_qty", "sum_amount_cents", "customers"], got, strict=True))


def test_a_csv_object_in_several_splits_to_postgres(
    s3_system: System,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    postgres_dsn: str,
) -> None:
    rows = write_orders(tmp_path, 20_000, files=1, seed=11)
    url = upload(s3_server, "landing/orders/orders.csv", (tmp_path / "orders-0.csv").read_bytes())
    table = f"s3_orders_{uuid.uuid4().hex[:8]}"
    spec = orders_spec(
        "s3-orders-csv",
        {"type": "csv", "path": url, "connection": "lake"},
        {"type": "postgres", "table": table},
        parallelism=4,
    )
    result = run_spec(s3_system, spec)
    assert_completed(result)
    assert stage(result, Stage.EXTRACT).rows_out == len(rows)
    assert figures(postgres_dsn, table) == expected_orders(rows)


def test_a_parquet_object_to_postgres(
    s3_system: System,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    postgres_dsn: str,
) -> None:
    rows = write_orders(tmp_path, 9_000, files=1, seed=12)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer, row_group_size=2_000)
    url = upload(s3_server, "landing/orders/orders.parquet", buffer.getvalue())
    table = f"s3_orders_pq_{uuid.uuid4().hex[:8]}"
    spec = orders_spec(
        "s3-orders-parquet",
        {"type": "parquet", "path": url, "connection": "lake"},
        {"type": "postgres", "table": table},
        parallelism=3,
    )
    result = run_spec(s3_system, spec)
    assert_completed(result)
    assert stage(result, Stage.EXTRACT).rows_out == len(rows)
    assert figures(postgres_dsn, table) == expected_orders(rows)


def test_an_object_outside_the_roots_is_rejected(
    s3_system: System,
    s3_server: S3Server,  # noqa: F811
) -> None:
    url = upload(s3_server, "private/orders.csv", b"id,customer,status,amount,qty\n1,C1,paid,1.00,1\n")
    spec = orders_spec(
        "s3-orders-outside",
        {"type": "csv", "path": url, "connection": "lake"},
        {"type": "postgres", "table": f"s3_never_{uuid.uuid4().hex[:8]}"},
    )
    result = run_spec(s3_system, spec)
    assert result.status is RunStatus.REJECTED
    assert any("outside the roots of connection 'lake'" in e.message for e in result.errors)
    assert all(s3_server.secret_key not in e.message for e in result.errors)


def test_a_csv_object_to_a_parquet_prefix_on_s3(
    s3_system: System,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    rows = write_orders(tmp_path, 6_000, files=1, seed=13)
    url = upload(s3_server, "landing/orders/for-parquet.csv", (tmp_path / "orders-0.csv").read_bytes())
    spec = orders_spec(
        "s3-orders-to-s3",
        {"type": "csv", "path": url, "connection": "lake"},
        {"type": "parquet", "path": f"s3://{BUCKET}/landing/curated", "connection": "lake"},
        parallelism=2,
    )
    result = run_spec(s3_system, spec)
    assert_completed(result)
    s3 = s3_server.filesystem()
    destination = f"s3://{BUCKET}/landing/curated"
    prefix = ObjectFileSink(destination, "lake", "parquet").run_prefix(result.run_id).fs_path
    infos = s3.get_file_info(pafs.FileSelector(prefix, recursive=True))
    parts = sorted(i.path for i in infos if i.base_name.startswith("part-"))
    summary = json.loads(s3.open_input_file(f"{prefix}/_SUCCESS").read())
    assert summary["files"] == [p.rsplit("/", 1)[1] for p in parts]
    loaded = pa.concat_tables(pq.read_table(io.BytesIO(s3.open_input_file(p).read())) for p in parts)
    want = expected_orders(rows)
    assert loaded.num_rows == summary["rows"] == want["count"]
    ids = loaded.column("id").to_pylist()
    assert len(set(ids)) == len(ids)  # no batch landed twice
    assert sum(ids) == want["sum_id"]


def test_a_dedupe_step_holds_across_batches_on_an_s3_prefix(
    s3_system: System,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    rows = write_orders(tmp_path, 4_000, files=1, seed=14)
    text = (tmp_path / "orders-0.csv").read_text()
    # every 7th order again at the end of the object: its copy is in another split and another batch
    repeated = "".join(line + "\n" for line in text.splitlines()[1:][::7])
    url = upload(s3_server, "landing/orders/with-repeats.csv", (text + repeated).encode())
    destination = f"s3://{BUCKET}/landing/deduped"
    spec = orders_spec(
        "s3-orders-dedupe",
        {"type": "csv", "path": url, "connection": "lake"},
        {"type": "jsonl", "path": destination, "connection": "lake"},
        parallelism=3,
    )
    spec["transforms"] = [*spec["transforms"], {"op": "dedupe", "keys": ["id"]}]
    result = run_spec(s3_system, spec)
    assert_completed(result)
    want = expected_orders(rows)
    prefix = ObjectFileSink(destination, "lake", "jsonl").run_prefix(result.run_id).fs_path
    parts = [key for key in s3_server.keys(prefix) if key.rsplit("/", 1)[1].startswith("part-")]
    assert len(parts) > 1  # several batches, so the repeats were dropped across batches, by the sink
    ids = [json.loads(line)["id"] for key in parts for line in s3_server.get(f"{BUCKET}/{key}").splitlines()]
    assert len(ids) == len(set(ids)) == want["count"]
    assert sum(ids) == want["sum_id"]
    assert stage(result, Stage.LOAD).rows_out == want["count"]
