"""JSON Lines connector: exact reassembly across splits and one schema for the whole run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shared.connectors import SourceNotFoundError, SourceReadError, jsonl_files, plan_splits, read_split
from shared.spec.models import JsonlSource

pytestmark = pytest.mark.unit


def records(n: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": "x" * (i % 9), "score": i / 4, "ok": i % 2 == 0, "tag": None if i % 3 else f"t{i}"}
        for i in range(offset, offset + n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]], newline: str = "\n", trailing: bool = True) -> Path:
    text = newline.join(json.dumps(r) for r in rows) + (newline if trailing else "")
    path.write_bytes(text.encode())
    return path


def read_all(
    source: JsonlSource, parallelism: int | None, batch_rows: int = 9
) -> tuple[list[Any], set[pa.Schema]]:
    rows: list[Any] = []
    schemas: set[pa.Schema] = set()
    for split in plan_splits(source, parallelism):
        for table in read_split(source, split, batch_rows):
            assert 0 < table.num_rows <= batch_rows
            schemas.add(table.schema)
            rows.extend(table.to_pylist())
    return rows, schemas


@pytest.mark.parametrize("parallelism", [1, 2, 5, 13, 64])
@pytest.mark.parametrize(("newline", "trailing"), [("\n", True), ("\r\n", True), ("\n", False)])
def test_splits_reassemble_exactly_with_one_schema(
    tmp_path: Path, parallelism: int, newline: str, trailing: bool
) -> None:
    rows = records(300)
    source = JsonlSource(path=str(write_jsonl(tmp_path / "d.jsonl", rows, newline, trailing)))
    got, schemas = read_all(source, parallelism)
    assert got == rows
    assert len(schemas) == 1
    assert next(iter(schemas)).field("id").type == pa.int64()


def test_schema_is_the_same_when_a_split_sees_only_nulls(tmp_path: Path) -> None:
    """Per-split inference would type 'tag' as null in the second half; the sampled schema keeps string."""
    rows = [{"id": i, "tag": f"t{i}" if i < 10 else None} for i in range(200)]
    source = JsonlSource(path=str(write_jsonl(tmp_path / "d.jsonl", rows)))
    got, schemas = read_all(source, 4)
    assert got == rows
    assert schemas == {pa.schema([("id", pa.int64()), ("tag", pa.string())])}


def test_glob_empty_file_and_blank_lines(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", records(20))
    (tmp_path / "b.jsonl").write_bytes(b"")
    (tmp_path / "c.jsonl").write_bytes(b"\n".join(json.dumps(r).encode() for r in records(5, 20)) + b"\n\n")
    got, _ = read_all(JsonlSource(path=str(tmp_path / "*.jsonl")), 4)
    assert got == records(25)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        plan_splits(JsonlSource(path=str(tmp_path / "none.jsonl")), 2)


def test_malformed_line_reports_line_number(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in records(30)]
    lines[21] = '{"id": 21, "name": '
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = JsonlSource(path=str(path))
    with pytest.raises(SourceReadError, match=r"line 22: invalid JSON"):
        read_all(source, 3)


def test_value_not_fitting_sampled_schema_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl_files, "SAMPLE_BYTES", 64)  # the sample sees only the first lines
    lines = [json.dumps({"id": i}) for i in range(10)] + ['{"id": "eleven"}', '{"id": 12, "extra": 1}']
    path = tmp_path / "types.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceReadError, match=r"line 11: does not fit the schema"):
        read_all(JsonlSource(path=str(path)), 1)
    path.write_text("\n".join(lines[:10] + lines[11:]) + "\n")
    with pytest.raises(SourceReadError, match=r"line 11: fields \['extra'\] are not in the schema"):
        read_all(JsonlSource(path=str(path)), 1)


def test_conflicting_types_inside_the_sample(tmp_path: Path) -> None:
    path = tmp_path / "types.jsonl"
    path.write_text('{"id": 1}\n{"id": "two"}\n')
    with pytest.raises(SourceReadError, match="changed from number to string"):
        read_all(JsonlSource(path=str(path)), 1)
