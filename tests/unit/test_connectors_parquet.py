"""Parquet connector: row-group splits planned from footers reassemble to exactly the files' rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.connectors import SourceNotFoundError, SourceReadError, plan_splits, read_split
from shared.contracts import SplitKind
from shared.spec.models import ParquetSource

pytestmark = pytest.mark.unit


def table(n: int, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "v": pa.array([i * 0.5 for i in ids], pa.float64()),
            "s": pa.array([str(i) for i in ids], pa.string()),
        }
    )


def read_all(source: ParquetSource, parallelism: int | None, batch_rows: int) -> pa.Table:
    tables = [t for split in plan_splits(source, parallelism) for t in read_split(source, split, batch_rows)]
    assert all(0 < t.num_rows <= batch_rows for t in tables)
    return pa.concat_tables(tables)


@pytest.mark.parametrize("parallelism", [1, 2, 3, 10, 50, None])
def test_row_group_splits_reassemble(tmp_path: Path, parallelism: int | None) -> None:
    data = table(1000)
    pq.write_table(data, tmp_path / "a.parquet", row_group_size=90)  # 12 row groups
    source = ParquetSource(path=str(tmp_path / "a.parquet"))
    splits = plan_splits(source, parallelism)
    assert {s.kind for s in splits} == {SplitKind.ROW_GROUPS}
    assert len(splits) == (1 if parallelism is None else min(parallelism, 12))
    assert read_all(source, parallelism, batch_rows=64).equals(data)


def test_glob_of_files_and_empty_file(tmp_path: Path) -> None:
    pq.write_table(table(100), tmp_path / "p1.parquet", row_group_size=30)
    pq.write_table(table(0), tmp_path / "p2.parquet")
    pq.write_table(table(50, 100), tmp_path / "p3.parquet", row_group_size=30)
    source = ParquetSource(path=(tmp_path / "*.parquet").as_uri())
    assert read_all(source, 4, batch_rows=1000).equals(table(150))


def test_schema_mismatch_and_missing_file(tmp_path: Path) -> None:
    pq.write_table(table(3), tmp_path / "a.parquet")
    pq.write_table(pa.table({"other": [1]}), tmp_path / "b.parquet")
    with pytest.raises(SourceReadError, match="schema differs"):
        plan_splits(ParquetSource(path=str(tmp_path / "*.parquet")), None)
    with pytest.raises(SourceNotFoundError):
        plan_splits(ParquetSource(path=str(tmp_path / "missing.parquet")), None)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_text("hello")
    with pytest.raises(SourceReadError):
        plan_splits(ParquetSource(path=str(tmp_path / "x.parquet")), None)
