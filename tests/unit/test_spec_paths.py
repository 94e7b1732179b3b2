"""Relative paths of a spec file resolve against the file's directory (``aoetl.spec_paths``), and what the
CLI submits or writes names the same files from any working directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.commands.definitions import load_definition
from aoetl.commands.pipelines import _load_or_exit
from aoetl.spec_paths import portable, portable_spec_paths, resolve, resolve_spec_paths
from shared.policy import check_spec, load_policy
from shared.spec import load_spec, parse_spec

pytestmark = pytest.mark.unit


def _spec(source_path: str, destination: dict | None = None) -> dict:
    return {
        "name": "paths",
        "source": {"type": "csv", "path": source_path},
        "destination": destination or {"type": "jsonl", "path": "out"},
    }


def test_relative_paths_resolve_against_the_base_and_dot_dot_is_resolved(tmp_path: Path) -> None:
    base = tmp_path / "specs"
    assert resolve("data/x.csv", base) == str(base / "data" / "x.csv")
    assert resolve("../data/*.csv", base) == str(tmp_path / "data" / "*.csv")
    assert resolve("./a/./b/../c.csv", base) == str(base / "a" / "c.csv")
    assert ".." not in resolve("../../x.csv", base)


@pytest.mark.parametrize(
    "kept", ["/abs/data/x.csv", "s3://bucket/data/*.parquet", "file:///srv/x.csv", "https://h/x", ""]
)
def test_absolute_paths_and_urls_are_kept_as_written(kept: str, tmp_path: Path) -> None:
    assert resolve(kept, tmp_path) == kept


def test_home_is_the_cli_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/x.csv", Path("/elsewhere")) == str(tmp_path / "x.csv")


def test_every_file_connector_is_resolved_and_the_rest_untouched(tmp_path: Path) -> None:
    spec = parse_spec(_spec("in/*.csv", {"type": "duckdb", "path": "w.db", "table": "t"}))
    resolved = resolve_spec_paths(spec, tmp_path)
    assert resolved.source.path == str(tmp_path / "in" / "*.csv")  # type: ignore[union-attr]
    assert resolved.destination.path == str(tmp_path / "w.db")  # type: ignore[union-attr]
    assert resolved.transforms == spec.transforms and resolved.name == spec.name
    postgres = parse_spec({**_spec("x.csv"), "destination": {"type": "postgres", "table": "t"}})
    assert resolve_spec_paths(postgres, tmp_path).destination == postgres.destination


def test_a_spec_file_read_from_another_directory_names_the_files_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "spec.yaml").write_text(json.dumps(_spec("data/x.csv", {"type": "parquet", "path": "../w"})))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for spec in (_load_or_exit(Path("../project/spec.yaml")), load_definition(project / "spec.yaml").spec):
        assert spec.source.path == str(project / "data" / "x.csv")  # type: ignore[union-attr]
        assert spec.destination.path == str(tmp_path / "w")  # type: ignore[union-attr]


def test_the_data_root_policy_still_judges_the_resolved_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    (root / "specs").mkdir(parents=True)
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(root)]))
    inside = resolve_spec_paths(
        parse_spec(_spec("data/x.csv", {"type": "jsonl", "path": "o"})), root / "specs"
    )
    assert check_spec(inside, load_policy()) == []
    # '..' is resolved, not smuggled: what leaves the root is refused by the policy as before
    outside = resolve_spec_paths(parse_spec(_spec("../../x.csv")), root / "specs")
    refused = check_spec(outside, load_policy())
    assert [issue.path for issue in refused] == ["source.csv.path"], refused
    # and a '..' the CLI did not resolve (a spec submitted by another client) is still refused outright
    assert check_spec(parse_spec(_spec(str(root / "specs" / ".." / "x.csv"))), load_policy())


def test_portable_paths_are_relative_under_the_spec_directory_else_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert portable("data/x.csv", Path(".")) == "data/x.csv"
    assert portable("data/x.csv", Path("data")) == "x.csv"
    assert portable("data/x.csv", Path("specs")) == str(tmp_path / "data" / "x.csv")
    assert portable("s3://b/x.csv", Path("specs")) == "s3://b/x.csv"
    spec = portable_spec_paths(parse_spec(_spec("data/x.csv")), Path("specs"))
    assert resolve_spec_paths(spec, tmp_path / "specs").source.path == str(tmp_path / "data" / "x.csv")  # type: ignore[union-attr]


def test_suggest_writes_paths_that_the_spec_file_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(tmp_path)]))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    runner = CliRunner()
    for written in ("x.yaml", "specs/x.yaml"):
        (tmp_path / written).parent.mkdir(exist_ok=True)
        made = runner.invoke(app, ["suggest", "data/x.csv", "--to", "jsonl:out", "-o", written])
        assert made.exit_code == 0, made.output
        monkeypatch.chdir("/")  # read back from anywhere
        spec = _load_or_exit(tmp_path / written)
        monkeypatch.chdir(tmp_path)
        assert spec.source.path == str(tmp_path / "data" / "x.csv")  # type: ignore[union-attr]
        assert spec.destination.path == str(tmp_path / "out")  # type: ignore[union-attr]
    assert load_spec(tmp_path / "x.yaml").source.path == "data/x.csv"  # type: ignore[union-attr]
    printed = runner.invoke(app, ["suggest", "data/x.csv", "--to", "jsonl:out"])
    assert printed.exit_code == 0, printed.output
    assert f"path: {tmp_path / 'data' / 'x.csv'}" in printed.stdout
