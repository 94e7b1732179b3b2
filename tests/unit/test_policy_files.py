"""Data roots (shared.policy.files): every way a path could leave them, at validation and where a file is
opened, on a real file system (symlinks, loops, globs, descriptors)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.policy import PolicySettings, PolicyViolation, check_spec
from shared.policy import files as policy_files
from shared.policy.files import confine, create_confined, open_confined, path_issue, verify_descriptor
from shared.spec import parse_spec

pytestmark = pytest.mark.unit


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with one file, beside (not inside) a secret."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "orders.csv").write_text("id\n1\n")
    (tmp_path / "secret.txt").write_text("s3cr3t-password\n")
    return (tmp_path / "root").resolve()


def roots(root: Path) -> tuple[Path, ...]:
    return PolicySettings(data_roots=(root,)).data_roots


def spec(source: dict, destination: dict | None = None) -> object:
    return parse_spec(
        {
            "name": "p",
            "source": source,
            "destination": destination or {"type": "postgres", "table": "t"},
        }
    )


# -------------------------------------------------------------------------------- validation rule
def test_no_data_root_means_no_file_access(root: Path) -> None:
    issues = check_spec(
        spec({"type": "csv", "path": str(root / "orders.csv")}), PolicySettings(data_roots=())
    )
    assert [i.path for i in issues] == ["source.csv.path"]
    assert "no data root is configured" in issues[0].reason


def test_a_file_inside_a_root_is_allowed_absolute_relative_or_as_url(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = roots(root)
    assert path_issue(str(root / "orders.csv"), allowed) is None
    assert path_issue((root / "orders.csv").as_uri(), allowed) is None
    monkeypatch.chdir(root)
    assert path_issue("orders.csv", allowed) is None
    assert path_issue("*.csv", allowed) is None


@pytest.mark.parametrize("path", ["/etc/passwd", "file:///etc/passwd", "/etc/*", "/"])
def test_absolute_paths_outside_every_root_are_refused(root: Path, path: str) -> None:
    assert "outside the data roots" in (path_issue(path, roots(root)) or "")


def test_dot_dot_is_refused_even_when_it_would_land_inside(root: Path) -> None:
    (root / "sub").mkdir()
    assert "'..' is not allowed" in (path_issue(str(root / "sub" / ".." / "orders.csv"), roots(root)) or "")
    assert "'..' is not allowed" in (path_issue(f"{root}/../secret.txt", roots(root)) or "")
    assert "'..' is not allowed" in (path_issue(f"{root}/../*.txt", roots(root)) or "")


def test_a_relative_path_from_a_working_directory_outside_the_roots_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root.parent)
    assert "outside the data roots" in (path_issue("secret.txt", roots(root)) or "")
    assert "outside the data roots" in (path_issue("*.txt", roots(root)) or "")


def test_home_expansion_is_resolved_before_the_check(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(root.parent))
    assert "outside the data roots" in (path_issue("~/secret.txt", roots(root)) or "")


def test_a_symlink_out_of_a_root_is_refused_and_one_within_is_allowed(root: Path) -> None:
    (root / "escape.csv").symlink_to(root.parent / "secret.txt")
    (root / "alias.csv").symlink_to(root / "orders.csv")
    (root / "dir-escape").symlink_to(root.parent, target_is_directory=True)
    allowed = roots(root)
    assert "outside the data roots" in (path_issue(str(root / "escape.csv"), allowed) or "")
    assert path_issue(str(root / "alias.csv"), allowed) is None
    assert "outside the data roots" in (path_issue(str(root / "dir-escape" / "secret.txt"), allowed) or "")
    assert "outside the data roots" in (path_issue(str(root / "dir-escape" / "*.txt"), allowed) or "")


def test_a_symlink_loop_is_refused(root: Path) -> None:
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    assert "symlink loop" in (path_issue(str(root / "loop-a"), roots(root)) or "")
    assert "symlink loop" in (path_issue(str(root / "loop-a" / "x.csv"), roots(root)) or "")


def test_a_glob_may_not_start_outside_a_root(root: Path) -> None:
    allowed = roots(root)
    assert path_issue(str(root / "**" / "*.csv"), allowed) is None
    assert "outside the data roots" in (path_issue(str(root.parent / "*" / "orders.csv"), allowed) or "")
    assert "outside the data roots" in (path_issue(str(root.parent / "**"), allowed) or "")


def test_nul_bytes_and_remote_file_urls_are_refused(root: Path) -> None:
    allowed = roots(root)
    assert "NUL" in (path_issue(f"{root}/orders.csv\x00.txt", allowed) or "")
    assert "only local file://" in (path_issue("file://evil.example/etc/passwd", allowed) or "")


@pytest.mark.parametrize("kind", ["duckdb", "parquet", "jsonl"])
def test_destinations_outside_the_roots_are_refused(root: Path, kind: str) -> None:
    table = {"table": "t"} if kind == "duckdb" else {}
    inside = spec(
        {"type": "csv", "path": str(root / "orders.csv")}, {"type": kind, "path": str(root / "out"), **table}
    )
    outside = spec(
        {"type": "csv", "path": str(root / "orders.csv")}, {"type": kind, "path": "/root/.ssh/x", **table}
    )
    policy = PolicySettings(data_roots=(root,))
    assert check_spec(inside, policy) == []
    assert [i.path for i in check_spec(outside, policy)] == [f"destination.{kind}.path"]


def test_a_dangling_symlink_destination_pointing_out_is_refused(root: Path) -> None:
    (root / "warehouse.duckdb").symlink_to(root.parent / "authorized_keys")  # does not exist yet
    assert "outside the data roots" in (path_issue(str(root / "warehouse.duckdb"), roots(root)) or "")


def test_every_source_file_type_is_checked(root: Path) -> None:
    policy = PolicySettings(data_roots=(root,))
    for kind in ("csv", "jsonl", "parquet"):
        issues = check_spec(spec({"type": kind, "path": "/etc/passwd"}), policy)
        assert [i.path for i in issues] == [f"{'source'}.{kind}.path"]


# ----------------------------------------------------------------------------- where files open
def test_open_confined_reads_inside_and_refuses_outside(root: Path) -> None:
    with open_confined(root / "orders.csv", roots(root)) as handle:
        assert handle.read() == b"id\n1\n"
    with pytest.raises(PolicyViolation):
        open_confined(root.parent / "secret.txt", roots(root))


def test_a_file_swapped_for_a_symlink_between_the_check_and_the_open_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = policy_files.confine

    def check_then_swap(path: str, allowed: tuple[Path, ...]) -> Path:
        real = checked(path, allowed)
        os.replace(root / "orders.csv", root / "orders.bak")
        (root / "orders.csv").symlink_to(root.parent / "secret.txt")  # planted right after the check
        return real

    monkeypatch.setattr(policy_files, "confine", check_then_swap)
    with pytest.raises(PolicyViolation, match="outside the data roots") as info:
        open_confined(root / "orders.csv", roots(root))
    assert "s3cr3t" not in str(info.value)


def test_verify_descriptor_judges_the_open_file_not_the_name(root: Path) -> None:
    with open(root.parent / "secret.txt", "rb") as handle, pytest.raises(PolicyViolation):
        verify_descriptor(handle.fileno(), root / "orders.csv", roots(root))


def test_create_confined_never_writes_through_a_symlink_at_its_name(root: Path) -> None:
    (root / "out.tmp").symlink_to(root.parent / "planted.txt")
    (root / "in.tmp").symlink_to(root / "target.txt")
    for planted in ("out.tmp", "in.tmp"):
        with pytest.raises(FileExistsError):  # O_EXCL | O_NOFOLLOW: the name exists, nothing is followed
            create_confined(root / planted, roots(root))
    assert not (root.parent / "planted.txt").exists() and not (root / "target.txt").exists()
    with create_confined(root / "fresh.tmp", roots(root)) as handle:
        handle.write(b"ok")
    assert (root / "fresh.tmp").read_bytes() == b"ok"


def test_create_confined_refuses_a_directory_swapped_after_the_check(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "run").mkdir()
    checked = policy_files.confine

    def check_then_swap(path: str, allowed: tuple[Path, ...]) -> Path:
        real = checked(path, allowed)
        (root / "run").rmdir()
        (root / "run").symlink_to(root.parent, target_is_directory=True)
        return real

    monkeypatch.setattr(policy_files, "confine", check_then_swap)
    with pytest.raises(PolicyViolation):
        create_confined(root / "run" / "part.tmp", roots(root))
    assert not (root.parent / "part.tmp").exists()  # the file created outside was removed again


def test_confine_returns_the_real_path(root: Path) -> None:
    (root / "alias.csv").symlink_to(root / "orders.csv")
    assert confine(str(root / "alias.csv"), roots(root)) == root / "orders.csv"


# ----------------------------------------------------------------------------------- settings
def test_data_roots_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = root.parent / "link"
    link.symlink_to(root, target_is_directory=True)
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(link), "/srv/data"]))
    assert PolicySettings().data_roots == (root, Path("/srv/data"))  # symlinks resolved once, here
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", f"{root}{os.pathsep}/srv/data")
    assert PolicySettings().data_roots == (root, Path("/srv/data"))
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", "")
    assert PolicySettings().data_roots == ()
    monkeypatch.delenv("AOETL_POLICY_DATA_ROOTS")
    assert PolicySettings().data_roots == ()  # production default: no file access


PATHS = ["/", "//", "/a", "/a/b", "/ab", "/a/b/c", "/A", "a", "a/b", ".", "b", "//a", "//a/b"]


@pytest.mark.parametrize("root", PATHS)
def test_is_under_answers_as_is_relative_to(root: str) -> None:
    """``is_under`` compares the paths' parts itself (pathlib's ``is_relative_to`` was ~20 us a call,
    several calls per run): the same answer for every pair, roots absolute, relative and empty."""
    for path in PATHS:
        expected = Path(path) == Path(root) or Path(path).is_relative_to(Path(root))
        assert policy_files.is_under(Path(path), [Path(root)]) is expected, (path, root)
    assert not policy_files.is_under(Path("/a"), [])


def test_dot_dot_is_refused_however_it_is_written(root: Path) -> None:
    for path in (f"{root}/../x", f"{root}/a/..", "../x", ".."):
        with pytest.raises(PolicyViolation, match=r"'\.\.'"):
            confine(path, roots(root))
    assert confine(str(root / "a..b"), roots(root)) == root / "a..b"  # not a component: a name
