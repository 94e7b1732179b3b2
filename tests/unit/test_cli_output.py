"""``-o table|json|yaml`` of the read commands (``aoetl.output.emit``): the same records as the table, as one
JSON or YAML document, never wrapped; nothing secret in them (no payload bytes, no key hash)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import aoetl.client
from aoetl.cli import app
from aoetl.commands import dlq
from shared.contracts import DeadLetter, ErrorInfo, Origin, PipelineResult, RunStatus, Stage
from tests.unit.test_cli_progress import T0, FakeClient, events

pytestmark = pytest.mark.unit


def invoke(monkeypatch: pytest.MonkeyPatch, client: Any, *args: str) -> Any:
    # the commands import the client when they run (cold start, aoetl.cli): the fake replaces it there
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: client)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": None})


def test_status_of_a_finished_run_as_json_keeps_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    result = PipelineResult(
        run_id="r1",
        request_id="q1",
        pipeline="orders",
        status=RunStatus.FAILED,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
    )
    shown = invoke(monkeypatch, FakeClient(result=result), "status", "r1", "-o", "json")
    assert shown.exit_code == 1, shown.output
    assert json.loads(shown.output) == result.model_dump(mode="json")


def test_status_of_a_run_in_progress_as_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = invoke(monkeypatch, FakeClient(run=events()), "status", "r1", "--output", "yaml")
    assert shown.exit_code == 0, shown.output
    document = yaml.safe_load(shown.output)
    assert document["run_id"] == "r1" and document["status"] == "RUNNING"
    load = next(s for s in document["stages"] if s["stage"] == "load")
    assert load["rows_out"] == 7 and load["batches"] == 1  # the redelivered batch counted once, as the table
    assert document["quality"] == [{"rule": "ids", "checked_rows": 8, "failed_rows": 1}]
    assert document["last_event"]["kind"] == "BATCH_LOADED"


def letter(n: int) -> DeadLetter:
    return DeadLetter(
        origin=Origin(topic="aoetl.batches", partition=0, offset=n),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message="x" * 200),
        run_id="r1",
        payload=b"the original bytes",
    )


@pytest.mark.parametrize("fmt", ["json", "yaml", "table"])
def test_dlq_list_in_every_format(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    letters = [letter(1), letter(2)]
    monkeypatch.setattr(aoetl.client, "AoetlClient", lambda: FakeClient())
    monkeypatch.setattr(dlq, "matching_letters", lambda *_: iter(letters))
    shown = CliRunner().invoke(app, ["dlq", "list", "-o", fmt], env={"COLUMNS": None})
    assert shown.exit_code == 0, shown.output
    if fmt == "table":
        assert "2 dead letter(s)" in shown.output and letters[0].dead_letter_id in shown.output
        return
    document = json.loads(shown.output) if fmt == "json" else yaml.safe_load(shown.output)
    assert [d["dead_letter_id"] for d in document] == [d.dead_letter_id for d in letters]
    assert document[0]["error"]["message"] == "x" * 200  # not cut as the table's column is
    assert "payload" not in document[0] and document[0]["payload_bytes"] == len(b"the original bytes")


def test_an_unknown_format_is_a_usage_error() -> None:
    shown = CliRunner().invoke(app, ["dlq", "list", "-o", "xml"])
    assert shown.exit_code == 2
