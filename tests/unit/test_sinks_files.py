"""Parquet and JSONL directory sinks: one atomically written file per batch, idempotent by batch id, a
``_SUCCESS`` marker on finalize, dedupe across batches, and every value read back intact."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from services.load.sinks import WriteResult, open_sink
from services.load.sinks.files import FileFormat, FileSink, write_atomically
from shared.spec.models import JsonlDestination, ParquetDestination
from tests.support.file_sink_dedupe import RUN, check_dedupe_across_replicas
from tests.support.sink_tables import as_metrics, checksum_query, expected_checksums, sample_table

pytestmark = pytest.mark.unit

FORMATS: list[FileFormat] = ["parquet", "jsonl"]


def read_back(sink: FileSink, run_id: str, fmt: FileFormat) -> dict[str, object]:
    """Checksums computed by DuckDB over the files, independently of how the sink wrote them."""
    pattern = str(sink.run_directory(run_id) / f"part-*.{fmt}")
    reader = (
        f"read_parquet('{pattern}')"
        if fmt == "parquet"
        else f"read_json('{pattern}', format='newline_delimited')"
    )
    source = (
        '(SELECT id, qty, price, name, active, CAST("day" AS DATE) AS "day",'
        f' CAST("at" AS TIMESTAMPTZ) AS "at", CAST(amount AS DECIMAL(12,2)) AS amount FROM {reader})'
    )
    sql, names = checksum_query(source, "duckdb")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(sql).fetchone()
    assert row is not None
    return as_metrics(row, names)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_batch_is_one_file_written_once(tmp_path: Path, fmt: FileFormat):
    sink = FileSink(tmp_path, fmt)
    first, second = sample_table(1500, seed=1), sample_table(500, seed=2, start_id=1500)
    wrote_first = sink.write("run/1", "task:0", first)
    wrote_second = sink.write("run/1", "task:1", second)
    part = sink.part_path("run/1", "task:0")
    size = part.stat().st_size  # the bytes reported are the part's, as on disk
    assert wrote_first == WriteResult(True, 1500, 0, bytes_written=size) and size > 0
    assert wrote_second == WriteResult(True, 500, 0, sink.part_path("run/1", "task:1").stat().st_size)
    written_at = part.stat().st_mtime_ns
    # a duplicate reports the first write, its size included
    assert sink.write("run/1", "task:0", first) == WriteResult(False, 1500, 0, bytes_written=size)
    assert FileSink(tmp_path, fmt).write("run/1", "task:1", second) == WriteResult(
        False, 500, 0, wrote_second.bytes_written
    )
    assert part.stat().st_mtime_ns == written_at

    run_dir = sink.run_directory("run/1")
    assert run_dir.parent == tmp_path and "/" not in run_dir.name
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [sink.part_path("run/1", "task:0").name, sink.part_path("run/1", "task:1").name]
    )  # no temp files left behind
    assert read_back(sink, "run/1", fmt) == pytest.approx(expected_checksums([first, second]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_finalize_writes_a_success_marker_once(tmp_path: Path, fmt: FileFormat):
    sink = FileSink(tmp_path, fmt)
    sink.write("run-s", "t:0", sample_table(30, seed=3))
    sink.write("run-s", "t:1", sample_table(12, seed=4))
    sink.finalize("run-s")
    marker = sink.run_directory("run-s") / "_SUCCESS"
    summary = json.loads(marker.read_text())
    assert summary["rows"] == 42
    assert summary["files"] == sorted([sink.part_path("run-s", b).name for b in ("t:0", "t:1")])
    first = marker.stat().st_mtime_ns
    sink.finalize("run-s")
    assert marker.stat().st_mtime_ns == first


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_drops_an_unfinished_run_but_not_a_finished_one(tmp_path: Path, fmt: FileFormat):
    sink = FileSink(tmp_path, fmt)
    sink.write("run-bad", "t:0", sample_table(5, seed=5))
    sink.abort("run-bad")
    sink.abort("run-bad")
    assert not sink.run_directory("run-bad").exists()
    sink.write("run-ok", "t:0", sample_table(5, seed=6))
    sink.finalize("run-ok")
    sink.abort("run-ok")
    assert (sink.run_directory("run-ok") / "_SUCCESS").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_dedupe_keys_hold_across_batches_and_sink_restarts(tmp_path: Path, fmt: FileFormat):
    one = pa.table({"k": [1, 2, 2], "day": pa.array([0, 1, 1], pa.date32()), "tag": ["a", "b", "b-dup"]})
    two = pa.table({"k": [2, 3], "day": pa.array([1, 1], pa.date32()), "tag": ["b-again", "c"]})
    wrote = FileSink(tmp_path, fmt).write("run-d", "t:0", one, dedupe_keys=["k", "day"])
    assert (wrote.applied, wrote.rows_written, wrote.rows_deduplicated) == (True, 2, 1)
    # A new sink object (a restarted load service) learns the run's keys from the files.
    wrote = FileSink(tmp_path, fmt).write("run-d", "t:1", two, dedupe_keys=["k", "day"])
    assert (wrote.applied, wrote.rows_written, wrote.rows_deduplicated) == (True, 1, 1)
    pattern = str(tmp_path / "run-d" / f"part-*.{fmt}")
    reader = f"read_parquet('{pattern}')" if fmt == "parquet" else f"read_json('{pattern}')"
    with duckdb.connect() as con:
        assert con.execute(f"SELECT tag FROM {reader} ORDER BY tag").fetchall() == [("a",), ("b",), ("c",)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_dedupe_keys_hold_across_replicas_writing_in_turn(tmp_path: Path, fmt: FileFormat):
    def read_keys() -> list[int]:
        pattern = str(tmp_path / RUN / f"part-*.{fmt}")
        reader = f"read_parquet('{pattern}')" if fmt == "parquet" else f"read_json('{pattern}')"
        with duckdb.connect() as con:
            return [int(k) for (k,) in con.execute(f"SELECT k FROM {reader}").fetchall()]

    check_dedupe_across_replicas(lambda: FileSink(tmp_path, fmt), read_keys)


def test_an_atomic_write_returns_the_size_of_the_file(tmp_path: Path):
    assert write_atomically(tmp_path / "part.bin", lambda handle: handle.write(b"12345")) == 5
    assert (tmp_path / "part.bin").read_bytes() == b"12345"


def test_an_interrupted_write_leaves_no_file(tmp_path: Path):
    target = tmp_path / "part.bin"

    def fail_halfway(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("disk vanished")

    with pytest.raises(RuntimeError):
        write_atomically(target, fail_halfway)
    assert list(tmp_path.iterdir()) == []


def test_open_sink_builds_file_sinks(tmp_path: Path):
    parquet = open_sink(ParquetDestination(path=str(tmp_path / "p")))
    jsonl = open_sink(JsonlDestination(path=str(tmp_path / "j")))
    batch = pa.table({"id": [1, 2]})
    wrote_parquet, wrote_jsonl = parquet.write("r", "t:0", batch), jsonl.write("r", "t:0", batch)
    assert [p.suffix for p in (tmp_path / "p" / "r").iterdir()] == [".parquet"]
    assert [p.suffix for p in (tmp_path / "j" / "r").iterdir()] == [".jsonl"]
    assert wrote_parquet == WriteResult(True, 2, 0, next((tmp_path / "p" / "r").iterdir()).stat().st_size)
    jsonl_part = next((tmp_path / "j" / "r").iterdir())
    assert wrote_jsonl == WriteResult(True, 2, 0, len(b'{"id":1}\n{"id":2}\n'))
    assert jsonl_part.read_bytes() == b'{"id":1}\n{"id":2}\n'  # the size counted is the part's content
