"""CSV planning reads a file's header once while the file is unchanged (``csv_files.header_names``), and
the policy is still checked on every plan: the cache holds only what the file's bytes said."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.connectors import SourceReadError, csv_files, paths, plan_splits
from shared.connectors.paths import LocalFile
from shared.policy import PolicyViolation
from shared.spec.models import CsvSource

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    csv_files._HEADERS.clear()
    yield
    csv_files._HEADERS.clear()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the planner opened, in order."""
    seen: list[Path] = []
    real_open = paths.open_source

    def counting(path: Path, roots: object = None):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return real_open(path, roots)  # type: ignore[arg-type]

    monkeypatch.setattr(paths, "open_source", counting)
    return seen


def clock_after(monkeypatch: pytest.MonkeyPatch, path: Path, seconds: float) -> None:
    """The planner's clock ``seconds`` after ``path`` last changed (no waiting for files to age)."""
    st = os.stat(path)
    now = max(st.st_mtime_ns, st.st_ctime_ns) + int(seconds * 1e9)
    monkeypatch.setattr(csv_files, "_now_ns", lambda: now)


def test_an_unchanged_file_is_opened_once(tmp_path: Path, opened: list[Path], monkeypatch) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,name\n1,x\n")
    clock_after(monkeypatch, path, 5)
    source = CsvSource(path=str(path))
    first = plan_splits(source, None)
    assert plan_splits(source, None) == first
    assert plan_splits(source, None) == first
    assert len(opened) == 1


def test_a_changed_file_is_read_again(tmp_path: Path, opened: list[Path], monkeypatch) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("id,name\n1,x\n")
    b.write_text("id,name\n2,y\n")
    clock_after(monkeypatch, a, 5)
    source = CsvSource(path=str(tmp_path / "*.csv"))
    plan_splits(source, None)
    assert len(opened) == 2
    a.write_text("id,other\n1,x\n")  # another header: the file's identity changed
    clock_after(monkeypatch, a, 5)
    with pytest.raises(SourceReadError, match="differs"):
        plan_splits(source, None)
    assert opened[2:] == [a.resolve()]  # b is unchanged: its names came from the cache


def test_a_replaced_file_of_the_same_size_and_times_is_read_again(tmp_path: Path, opened, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_text("id,name\n1,x\n")
    clock_after(monkeypatch, path, 5)
    source = CsvSource(path=str(path))
    plan_splits(source, None)
    st = os.stat(path)
    other = tmp_path / "other.csv"
    other.write_text("id,nope\n1,x\n")  # same size
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)  # a new inode at the name
    clock_after(monkeypatch, path, 5)
    plan_splits(source, None)
    assert len(opened) == 2


def test_a_file_changed_just_now_is_not_cached(tmp_path: Path, opened: list[Path], monkeypatch) -> None:
    """Its times come from a coarse clock: a second write in the same tick could leave them as they are."""
    path = tmp_path / "a.csv"
    path.write_text("id,name\n1,x\n")
    clock_after(monkeypatch, path, 0.5)
    source = CsvSource(path=str(path))
    plan_splits(source, None)
    plan_splits(source, None)
    assert len(opened) == 2


def test_the_policy_is_checked_on_every_plan(tmp_path: Path, opened: list[Path], monkeypatch) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,name\n1,x\n")
    clock_after(monkeypatch, path, 5)
    source = CsvSource(path=str(path))
    plan_splits(source, None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(elsewhere)]))
    with pytest.raises(PolicyViolation, match="outside the data roots"):
        plan_splits(source, None)


def test_a_symlink_has_no_identity(tmp_path: Path) -> None:
    """A symlink where the resolved file was (swapped in after resolving) is opened, and checked, again."""
    (tmp_path / "a.csv").write_text("id\n1\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    assert LocalFile(tmp_path / "a.csv").identity() is not None
    assert LocalFile(tmp_path / "link.csv").identity() is None
    assert LocalFile(tmp_path / "missing.csv").identity() is None


def test_the_cache_is_bounded() -> None:
    cache = csv_files._HeaderCache(files=2)
    keys = [((1, i, 10, 0, 0), ",", True) for i in range(3)]
    for key in keys:
        cache.put(key, ["id"])
    assert cache.get(keys[0]) is None
    assert cache.get(keys[1]) == cache.get(keys[2]) == ["id"]
    cache.put(keys[0], ["x" * (csv_files.HEADER_CACHE_MAX_CHARS + 1)])  # too long to keep
    assert cache.get(keys[0]) is None
