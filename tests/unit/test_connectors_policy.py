"""File connectors enforce the data roots where they act: at planning and again when a split opens its
file, so a spec that skipped validation, or a symlink planted after it, still cannot read outside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.connectors import plan_splits, read_split
from shared.errors import TerminalError
from shared.policy import PolicyViolation
from shared.spec.models import CsvSource, JsonlSource, ParquetSource

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-password-1234"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "passwd.csv").write_text(f"user,password\nroot,{SECRET}\n")
    (tmp_path / "secret" / "passwd.jsonl").write_text(json.dumps({"user": "root", "password": SECRET}) + "\n")
    pq.write_table(pa.table({"user": ["root"], "password": [SECRET]}), tmp_path / "secret" / "passwd.parquet")
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(root)]))
    return root


def write_source(root: Path, kind: str) -> Path:
    path = root / f"data.{kind}"
    if kind == "csv":
        path.write_text("user,password\nana,x\n")
    elif kind == "jsonl":
        path.write_text(json.dumps({"user": "ana", "password": "x"}) + "\n")
    else:
        pq.write_table(pa.table({"user": ["ana"], "password": ["x"]}), path)
    return path


SOURCES = {"csv": CsvSource, "jsonl": JsonlSource, "parquet": ParquetSource}


@pytest.mark.parametrize("kind", SOURCES)
def test_a_source_outside_the_roots_is_refused_at_planning(root: Path, kind: str) -> None:
    outside = root.parent / "secret" / f"passwd.{kind}"
    with pytest.raises(PolicyViolation, match="outside the data roots") as info:
        plan_splits(SOURCES[kind](path=str(outside)), None)
    assert isinstance(info.value, TerminalError) and SECRET not in str(info.value)
    with pytest.raises(PolicyViolation):
        plan_splits(SOURCES[kind](path="/etc/passwd"), None)


@pytest.mark.parametrize("kind", SOURCES)
def test_a_symlink_planted_after_planning_is_refused_when_the_split_opens(root: Path, kind: str) -> None:
    path = write_source(root, kind)
    source = SOURCES[kind](path=str(path))
    splits = plan_splits(source, 1)
    os.replace(path, root / "moved")
    path.symlink_to(root.parent / "secret" / f"passwd.{kind}")  # planted after validation and planning
    with pytest.raises(PolicyViolation, match="outside the data roots") as info:
        list(read_split(source, splits[0], 100))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("kind", SOURCES)
def test_a_split_naming_a_file_outside_is_refused_whatever_planned_it(root: Path, kind: str) -> None:
    """A task produced straight to Kafka names its own split URI; the connector judges it anew."""
    path = write_source(root, kind)
    source = SOURCES[kind](path=str(path))
    split = plan_splits(source, 1)[0]
    forged = split.model_copy(update={"uri": (root.parent / "secret" / f"passwd.{kind}").as_uri()})
    with pytest.raises(PolicyViolation):
        list(read_split(source, forged, 100))


def test_a_glob_cannot_follow_a_symlinked_directory_out(root: Path) -> None:
    write_source(root, "csv")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root.parent / "secret", target_is_directory=True)
    source = CsvSource(path=str(root / "**" / "*.csv"))
    with pytest.raises(PolicyViolation, match="outside the data roots"):
        plan_splits(source, None)


def test_a_glob_inside_the_roots_reads_as_before(root: Path) -> None:
    write_source(root, "csv")
    (root / "more.csv").write_text("user,password\nbo,y\n")
    source = CsvSource(path=str(root / "*.csv"))
    rows = [r for s in plan_splits(source, None) for t in read_split(source, s, 100) for r in t.to_pylist()]
    assert sorted(r["user"] for r in rows) == ["ana", "bo"]


def test_whether_a_file_exists_outside_the_roots_is_not_told(root: Path) -> None:
    with pytest.raises(PolicyViolation):
        plan_splits(CsvSource(path=str(root.parent / "no-such-file.csv")), None)


def test_without_any_root_no_file_is_read(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_source(root, "csv")
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", "[]")
    with pytest.raises(PolicyViolation, match="no data root is configured"):
        plan_splits(CsvSource(path=str(path)), None)
