"""The CLI side of the spec policy and of secret hygiene: ``aoetl validate`` applies the policy of its
environment, and ``aoetl dev status`` / ``dev up`` never print a DSN password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.devstack import stack as devstack

pytestmark = pytest.mark.unit

PLANTED = "Planted-Pg-Pw-7"


def write_spec(tmp_path: Path, source: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    spec = {"name": "cli-policy", "source": source, "destination": {"type": "jsonl", "path": str(tmp_path)}}
    path.write_text(yaml.safe_dump(spec))
    return path


def validate(path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["validate", str(path), *args], env={"COLUMNS": "200", **(env or {})})


def test_validate_refuses_what_the_policy_refuses(tmp_path: Path) -> None:
    stealing = write_spec(
        tmp_path, {"type": "http", "url": "https://api.example.com/", "auth_env": "AOETL_KAFKA_SASL_PASSWORD"}
    )
    shown = validate(stealing)
    assert shown.exit_code == 2, shown.output
    assert "refused by the spec policy" in shown.output and "source.auth_env" in shown.output
    metadata = write_spec(tmp_path, {"type": "http", "url": "http://169.254.169.254/latest/meta-data/"})
    shown = validate(metadata)
    assert shown.exit_code == 2 and "source.url" in shown.output and "cloud metadata" in shown.output


def test_validate_applies_the_connections_and_tenant_of_its_environment(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"type": "postgres", "table": "public.t", "connection": "crm"})
    assert validate(spec).exit_code == 2
    declared = {"AOETL_POLICY_CONNECTIONS": '{"crm": {"env": "CRM_DSN", "tenants": ["acme"]}}'}
    assert validate(spec, "--tenant", "acme", env=declared).exit_code == 0
    refused = validate(spec, env=declared)  # tenant default
    assert refused.exit_code == 2 and "tenant 'default' may not use connection 'crm'" in refused.output
    broken = validate(spec, env={"AOETL_POLICY_CONNECTIONS": "{nope"})
    assert broken.exit_code == 2 and "invalid spec policy settings" in broken.output


def test_dev_status_masks_the_postgres_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack, "kafka_ready", lambda settings, timeout=5.0: False)
    dsn = f"postgresql://etl:{PLANTED}@127.0.0.1:1/aoetl"  # nothing listens: unhealthy, quickly
    shown = CliRunner().invoke(
        app,
        ["dev", "status"],
        env={
            "COLUMNS": "200",
            "AOETL_STATE_DIR": str(tmp_path),
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "AOETL_POSTGRES_DSN": dsn,
        },
    )
    assert shown.exit_code == 1  # unhealthy
    assert "postgresql://etl:***@127.0.0.1:1/aoetl" in shown.output
    assert PLANTED not in shown.output
