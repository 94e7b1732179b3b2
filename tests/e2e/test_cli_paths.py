"""The new user's path, on the real stack: ``aoetl suggest data/x.csv --to postgres://... -o x.yaml`` then
``aoetl run x.yaml`` loads the file, from the spec's own directory and from any other one (the services
run in a working directory of their own: ``aoetl.spec_paths``); its ISO-8601 UTC timestamps land in a
``timestamptz`` column, as the instants they are."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


def _cli_env(system: System, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": system.env["KAFKA_BOOTSTRAP_SERVERS"],
        "AOETL_TOPIC_SUFFIX": system.suffix,
        "AOETL_CONFIG": str(tmp_path / "no-config.toml"),
        "COLUMNS": "200",
        **system.cli_env,
    }


def test_a_suggested_spec_with_relative_paths_runs_from_its_directory_and_from_another(
    system: System, tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    with (project / "data" / "x.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "amount", "at"])
        writer.writerows([i, f"{i * 1.5:.2f}", f"2024-03-01T10:{i % 60:02d}:00Z"] for i in range(1, 301))
    table = f"cli_paths_{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    env = _cli_env(system, tmp_path)

    monkeypatch.chdir(project)
    suggested = runner.invoke(
        app,
        ["suggest", "data/x.csv", "--to", f"postgres://{table}", "--name", "cli-paths", "-o", "x.yaml"],
        env=env,
    )
    assert suggested.exit_code == 0, suggested.output
    assert "path: data/x.csv" in (project / "x.yaml").read_text()  # as the user named it

    ran = runner.invoke(app, ["run", "x.yaml", "--timeout", "120"], env=env)
    assert ran.exit_code == 0, ran.output  # COMPLETED: the services found data/x.csv of this directory
    with psycopg.connect(postgres_dsn) as con:
        assert con.execute(f"SELECT count(*), sum(id) FROM {table}").fetchone() == (300, 300 * 301 // 2)
        kind = con.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = %s AND column_name = 'at'",
            (table,),
        ).fetchone()
        assert kind == ("timestamp with time zone",)
        at = con.execute(f"SELECT at FROM {table} WHERE id = 7").fetchone()
        assert at is not None and at[0] == datetime(2024, 3, 1, 10, 7, tzinfo=UTC)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = runner.invoke(app, ["run", "../project/x.yaml", "--timeout", "120"], env=env)
    assert again.exit_code == 0, again.output
    with psycopg.connect(postgres_dsn) as con:  # a merge on the suggested key: the same rows, once each
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (300,)
