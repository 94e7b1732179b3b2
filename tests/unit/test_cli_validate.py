"""``aoetl validate`` checks the spec policy too, as the services do, and prints field path + reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aoetl.cli import app

pytestmark = pytest.mark.unit


def write_spec(path: Path, source: dict, destination: dict) -> Path:
    path.write_text(yaml.safe_dump({"name": "p", "source": source, "destination": destination}))
    return path


def test_validate_refuses_what_the_policy_refuses(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "p.yaml",
        {"type": "csv", "path": "/etc/passwd"},
        {"type": "postgres", "table": "aoetl.aoetl_ledger", "mode": "replace"},
    )
    result = CliRunner().invoke(app, ["validate", str(spec)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "refused by the spec policy" in output
    assert "source.csv.path" in output and "destination.postgres.table" in output


def test_validate_accepts_files_under_the_development_roots(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("id\n1\n")
    spec = write_spec(
        tmp_path / "p.yaml",
        {"type": "csv", "path": str(tmp_path / "orders.csv")},
        {"type": "duckdb", "path": str(tmp_path / "w.duckdb"), "table": "orders"},
    )
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 0, result.output


def test_the_bundled_example_validates_from_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["validate", "examples/orders/pipeline.yaml"])
    assert result.exit_code == 0, result.output
