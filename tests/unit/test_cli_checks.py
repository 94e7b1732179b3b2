"""``aoetl validate`` checks definition files whole (triggers too) and the transform steps' SQL as the
transform service does, with the step's path; read commands print ``-o json|yaml`` documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aoetl.cli import app

pytestmark = pytest.mark.unit


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "in.csv").write_text("id,amount\n1,2.5\n2,0.5\n")
    return {"AOETL_POLICY_DATA_ROOTS": json.dumps([str(tmp_path)]), "COLUMNS": "200"}


def _write(tmp_path: Path, transforms: list[dict], **extra: object) -> Path:
    spec = {
        "name": "checks",
        "source": {"type": "csv", "path": "in.csv"},
        "transforms": transforms,
        "destination": {"type": "jsonl", "path": "out"},
        **extra,
    }
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_definition_file_with_triggers_is_valid(tmp_path: Path, env: dict[str, str]) -> None:
    triggers = [
        {"type": "webhook", "source": "github", "event": "push"},
        {"type": "topic", "topic": "orders"},
    ]
    file = _write(tmp_path, [{"op": "filter", "expr": "amount > 1"}], triggers=triggers)
    shown = CliRunner().invoke(app, ["validate", str(file)], env=env)
    assert shown.exit_code == 0, shown.output
    assert "2 trigger(s)" in shown.output


def test_a_bad_trigger_and_a_trigger_on_an_internal_topic_are_refused_with_their_path(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = _write(tmp_path, [], triggers=[{"type": "topic", "topic": "orders", "window": {"events": 0}}])
    shown = CliRunner().invoke(app, ["validate", str(bad)], env=env)
    assert shown.exit_code == 2 and "triggers[0].topic.window.events" in shown.output, shown.output
    internal = _write(tmp_path, [], triggers=[{"type": "topic", "topic": "aoetl.requests"}])
    refused = CliRunner().invoke(app, ["validate", str(internal)], env=env)
    assert refused.exit_code == 2 and "triggers[0].topic" in refused.output, refused.output


@pytest.mark.parametrize(
    ("step", "where"),
    [
        ({"op": "filter", "expr": "amount >"}, "transforms[1].expr"),
        ({"op": "derive", "column": "x", "expr": "amount + 1; DROP TABLE batch"}, "transforms[1].expr"),
        ({"op": "sql", "query": "SELECT * FROM batch; SELECT 1"}, "transforms[1].query"),
        ({"op": "sql", "query": "SELECT * FROM batch WHERE"}, "transforms[1].query"),
    ],
)
def test_sql_the_transform_service_would_refuse_is_a_validation_error_with_the_steps_path(
    tmp_path: Path, env: dict[str, str], step: dict, where: str
) -> None:
    file = _write(tmp_path, [{"op": "cast", "columns": {"id": "int64"}}, step])
    shown = CliRunner().invoke(app, ["validate", str(file)], env=env)
    assert shown.exit_code == 2, shown.output
    assert where in shown.output, shown.output


def test_valid_sql_passes(tmp_path: Path, env: dict[str, str]) -> None:
    steps = [
        {"op": "derive", "column": "double", "expr": "amount * 2"},
        {"op": "sql", "query": "SELECT id, double FROM batch WHERE double > 1"},
    ]
    shown = CliRunner().invoke(app, ["validate", str(_write(tmp_path, steps))], env=env)
    assert shown.exit_code == 0, shown.output


def test_profile_and_dev_status_print_documents(tmp_path: Path, env: dict[str, str]) -> None:
    profiled = CliRunner().invoke(app, ["profile", str(tmp_path / "in.csv"), "-o", "yaml"], env=env)
    assert profiled.exit_code == 0, profiled.output
    document = yaml.safe_load(profiled.stdout)
    assert (document["sampled_rows"], document["total_rows"]) == (2, 2)
    assert [c["name"] for c in document["columns"]] == ["id", "amount"]
    as_json = CliRunner().invoke(app, ["profile", str(tmp_path / "in.csv"), "-o", "json"], env=env)
    assert json.loads(as_json.stdout) == document

    state = {**env, "AOETL_STATE_DIR": str(tmp_path / "state"), "KAFKA_BOOTSTRAP_SERVERS": ""}
    state["AOETL_POSTGRES_DSN"] = ""
    status = CliRunner().invoke(app, ["dev", "status", "-o", "json"], env=state)
    assert status.exit_code == 1  # nothing runs: unhealthy, and still a document
    rows = json.loads(status.stdout)
    assert {row["component"] for row in rows} == {"kafka", "postgres"}
    assert not any(row["healthy"] for row in rows)
