"""Sinks enforce the policy where they write: file destinations only inside the data roots (at every open),
run ids that cannot be one directory name refused, and no table or topic the system owns."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from services.load.sinks import open_sink
from services.load.sinks.duckdb_file import DuckDBSink
from services.load.sinks.files import FileSink
from services.load.sinks.kafka_topic import KafkaSink
from services.load.sinks.postgres import PostgresSink
from shared.policy import PolicyViolation
from shared.settings import KafkaSettings
from shared.spec.models import (
    DuckDBDestination,
    JsonlDestination,
    KafkaDestination,
    ParquetDestination,
    PostgresDestination,
)

pytestmark = pytest.mark.unit

BATCH = pa.table({"id": [1, 2]})


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(root)]))
    return root


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("run_id", ["..", ".", ""])
@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_a_run_id_that_is_not_a_directory_name_is_refused(root: Path, kind: str, run_id: str) -> None:
    destination = root / "out"
    sink = FileSink(destination, kind)  # type: ignore[arg-type]
    before = files_under(root.parent)
    with pytest.raises(PolicyViolation, match="cannot name a directory"):
        sink.write(run_id, "t:0", BATCH)
    with pytest.raises(PolicyViolation):
        sink.finalize(run_id)
    with pytest.raises(PolicyViolation):
        sink.abort(run_id)
    assert files_under(root.parent) == before  # nothing written beside or above the destination


def test_unsafe_characters_of_a_run_id_still_become_one_safe_name(root: Path) -> None:
    sink = FileSink(root / "out", "jsonl")
    assert sink.write("../../etc/x", "t:0", BATCH).applied
    (run_dir,) = (root / "out").iterdir()
    assert run_dir.parent == root / "out" and "/" not in run_dir.name


@pytest.mark.parametrize("destination", ["/etc", "/root/.ssh"])
def test_a_file_destination_outside_the_roots_is_refused(root: Path, destination: str) -> None:
    sink = open_sink(JsonlDestination(path=destination))
    with pytest.raises(PolicyViolation, match="outside the data roots"):
        sink.write("r1", "t:0", BATCH)


def test_a_run_directory_planted_as_a_symlink_out_is_refused(root: Path) -> None:
    outside = root.parent / "elsewhere"
    outside.mkdir()
    (root / "out").mkdir()
    (root / "out" / "r1").symlink_to(outside, target_is_directory=True)
    sink = FileSink(root / "out", "parquet")
    with pytest.raises(PolicyViolation):
        sink.write("r1", "t:0", BATCH)
    with pytest.raises(PolicyViolation):
        sink.abort("r1")  # and abort does not delete through it
    assert list(outside.iterdir()) == []


def test_a_part_planted_as_a_symlink_is_never_read(root: Path) -> None:
    secret = root.parent / "secret.jsonl"
    secret.write_text('{"id": 999}\n')
    sink = FileSink(root / "out", "jsonl")
    part = sink.part_path("r1", "t:0")
    part.parent.mkdir(parents=True)
    part.symlink_to(secret)  # a "first delivery" whose row count would be read from outside
    with pytest.raises(PolicyViolation):
        sink.write("r1", "t:0", BATCH)


def test_duckdb_files_only_inside_the_roots(root: Path) -> None:
    inside = DuckDBSink(DuckDBDestination(path=str(root / "w.duckdb"), table="orders"))
    assert inside.write("r1", "t:0", BATCH).applied
    outside = DuckDBSink(DuckDBDestination(path=str(root.parent / "w.duckdb"), table="orders"))
    with pytest.raises(PolicyViolation):
        outside.write("r1", "t:0", BATCH)
    assert not (root.parent / "w.duckdb").exists()


def test_a_duckdb_path_planted_as_a_symlink_out_is_refused(root: Path) -> None:
    target = root.parent / "authorized_keys"
    (root / "w.duckdb").symlink_to(target)
    with pytest.raises(PolicyViolation):
        DuckDBSink(DuckDBDestination(path=str(root / "w.duckdb"), table="orders")).write("r1", "t:0", BATCH)
    assert not target.exists()


@pytest.mark.parametrize("table", ["aoetl.aoetl_ledger", "aoetl.dedupe", "pg_catalog.pg_class", "t__aoetl_x"])
def test_postgres_sinks_refuse_the_systems_tables_before_connecting(table: str) -> None:
    with pytest.raises(PolicyViolation):
        PostgresSink(
            PostgresDestination(table=table, mode="replace"), dsn="postgresql://nobody@127.0.0.1:1/x"
        )


def test_duckdb_sinks_refuse_reserved_table_names(root: Path) -> None:
    with pytest.raises(PolicyViolation):
        DuckDBSink(DuckDBDestination(path=str(root / "w.duckdb"), table="orders__aoetl_1234"))


@pytest.mark.parametrize("topic", ["aoetl.requests", "aoetl.results.e2e1", "__consumer_offsets"])
def test_kafka_sinks_refuse_internal_topics(topic: str) -> None:
    with pytest.raises(PolicyViolation, match="internal"):
        KafkaSink(KafkaDestination(topic=topic), KafkaSettings(bootstrap_servers="127.0.0.1:1"))


def test_parquet_destination_inside_the_roots_writes_as_before(root: Path) -> None:
    sink = open_sink(ParquetDestination(path=str(root / "p")))
    assert sink.write("r1", "t:0", BATCH).applied
    sink.finalize("r1")
    assert sorted(p.name for p in (root / "p" / "r1").iterdir())[0] == "_SUCCESS"
