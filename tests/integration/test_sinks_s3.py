"""Parquet and JSONL destinations on object storage, against a real S3-compatible server (S3Proxy): one
object per batch under its deterministic key, a redelivered batch writes nothing and reports the first
delivery's rows, ``_SUCCESS`` lists the parts, an aborted run's parts are deleted, and the policy (roots)
is checked where the sink writes."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.load.sinks.factory import open_sink
from services.load.sinks.object_files import ObjectFileSink
from shared.errors import DataError
from shared.policy.errors import PolicyViolation
from shared.spec.models import JsonlDestination, ParquetDestination
from tests.support.file_sink_dedupe import RUN, check_dedupe_across_replicas
from tests.support.s3_server import (  # noqa: F401 - s3_server: the session fixture
    S3Server,
    declare_connections,
    new_bucket,
    s3_connection,
    s3_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    name = new_bucket(s3_server)
    declare_connections(monkeypatch, s3_server, {"lake": s3_connection(s3_server, f"s3://{name}/out")})
    return name


def batch(start: int, rows: int) -> pa.Table:
    return pa.table(
        {"id": list(range(start, start + rows)), "name": [f"n{i}" for i in range(start, start + rows)]}
    )


def test_parquet_parts_exactly_once_with_a_redelivered_batch(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    sink = open_sink(ParquetDestination(path=f"s3://{bucket}/out/orders", connection="lake"))
    assert isinstance(sink, ObjectFileSink)
    first = sink.write("run-1", "task-a:0", batch(0, 1000))
    assert (first.applied, first.rows_written) == (True, 1000)
    assert sink.write("run-1", "task-a:1", batch(1000, 500)).applied
    part_0, part_1 = (sink.part_url("run-1", b).fs_path for b in ("task-a:0", "task-a:1"))
    assert part_0.startswith(f"{bucket}/out/orders/run-1/part-task-a_0")  # deterministic per batch
    before = s3_server.filesystem().open_input_file(part_0).read()
    assert first.bytes_written == len(before) > 0  # the object's size
    again = sink.write("run-1", "task-a:0", batch(0, 1000))  # the redelivery
    assert (again.applied, again.rows_written, again.bytes_written) == (False, 1000, len(before))
    sink.finalize("run-1")
    sink.finalize("run-1")  # idempotent
    listed = s3_server.keys(f"{bucket}/out/orders/run-1")
    assert [f"{bucket}/{key}" for key in listed] == [f"{bucket}/out/orders/run-1/_SUCCESS", part_0, part_1]
    s3 = s3_server.filesystem()
    assert s3.open_input_file(part_0).read() == before  # the same bytes: nothing rewritten
    ids = []
    for key in listed[1:]:
        ids += (
            pq.read_table(io.BytesIO(s3.open_input_file(f"{bucket}/{key}").read())).column("id").to_pylist()
        )
    assert sorted(ids) == list(range(1500))  # no duplicate rows
    summary = json.loads(s3.open_input_file(f"{bucket}/out/orders/run-1/_SUCCESS").read())
    assert summary["rows"] == 1500
    assert summary["files"] == [p.rsplit("/", 1)[1] for p in (part_0, part_1)]


def test_jsonl_parts_and_an_aborted_run(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    sink = open_sink(JsonlDestination(path=f"s3://{bucket}/out/events", connection="lake"))
    assert isinstance(sink, ObjectFileSink)
    assert sink.write("run-2", "t:0", batch(0, 10)).rows_written == 10
    assert sink.write("run-2", "t:0", batch(0, 10)).applied is False
    body = s3_server.filesystem().open_input_file(sink.part_url("run-2", "t:0").fs_path).read()
    assert [json.loads(line)["id"] for line in body.splitlines()] == list(range(10))
    sink.abort("run-2")
    assert s3_server.keys(f"{bucket}/out/events/run-2") == []


def test_the_sink_checks_the_policy(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    outside = open_sink(ParquetDestination(path=f"s3://{bucket}/elsewhere", connection="lake"))
    with pytest.raises(PolicyViolation, match="outside the roots"):
        outside.write("run-3", "t:0", batch(0, 1))
    assert s3_server.keys(f"{bucket}/elsewhere") == []
    inside = open_sink(ParquetDestination(path=f"s3://{bucket}/out/x", connection="lake"))
    with pytest.raises(DataError, match="dedupe keys"):  # a key column the batch lacks
        inside.write("run-3", "t:0", batch(0, 1), dedupe_keys=["nope"])


@pytest.mark.parametrize("destination", [ParquetDestination, JsonlDestination])
def test_dedupe_keys_hold_across_replicas_writing_in_turn(
    s3_server: S3Server,  # noqa: F811
    bucket: str,
    destination: type[ParquetDestination] | type[JsonlDestination],
) -> None:
    spec = destination(path=f"s3://{bucket}/out/deduped", connection="lake")

    def read_keys() -> list[int]:
        prefix = f"{bucket}/out/deduped/{RUN}"
        keys: list[int] = []
        for key in s3_server.keys(prefix):
            body = s3_server.get(f"{bucket}/{key}")
            if key.endswith(".parquet"):
                keys += pq.read_table(io.BytesIO(body)).column("k").to_pylist()
            elif key.endswith(".jsonl"):
                keys += [json.loads(line)["k"] for line in body.splitlines()]
        return keys

    check_dedupe_across_replicas(lambda: open_sink(spec), read_keys)
