"""``aoetl schema list|show|spec`` (issue 13): the catalog's Avro records and their versions, one record's
expanded schema (current or a version of its history, read back here from ``schemas/`` independently),
the spec's JSON Schema; the CLI's conventions: ``-o json|yaml`` documents, one-line errors, exit codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.commands.schema import resolve
from shared.avro.catalog import SchemaCatalog, SchemaEntry, schemas_dir
from shared.contracts import MESSAGE_TYPES, PipelineResult, RunEvent, WriteOutcome

pytestmark = pytest.mark.unit


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["schema", *args], env={"COLUMNS": "250"})


def history_file(name: str, version: int) -> dict[str, Any]:
    return json.loads((schemas_dir() / "history" / name / f"v{version}.avsc").read_text())


def test_list_is_every_avro_record_the_messages_with_their_versions() -> None:
    shown = invoke("list", "-o", "json")
    assert shown.exit_code == 0, shown.output
    rows = {row["name"]: row for row in json.loads(shown.output)}
    # every message type is there with the count of its history's files
    for model in MESSAGE_TYPES:
        files = list((schemas_dir() / "history" / model.avro_name).glob("v*.avsc"))
        assert rows[model.avro_name]["message"] is True
        assert rows[model.avro_name]["versions"] == len(files), model.avro_name
    assert rows[RunEvent.avro_name]["versions"] >= 11  # v11: BatchLoaded's bytes
    # the records messages embed are listed too, with no versions of their own; enums are not records
    assert rows[WriteOutcome.avro_name] | {"fingerprint": None} == {
        "name": WriteOutcome.avro_name,
        "message": False,
        "versions": None,
        "fields": 4,
        "fingerprint": None,
        "doc": "What a run wrote to its destination.",
    }
    assert "io.aoetl.RunStatus" not in rows and "io.aoetl.event.BatchLoaded" in rows
    catalog = SchemaCatalog.default()
    assert rows[RunEvent.avro_name]["fingerprint"] == catalog.fingerprint(RunEvent.avro_name).hex()

    only = json.loads(invoke("list", "--messages", "-o", "json").output)
    assert {row["name"] for row in only} == {m.avro_name for m in MESSAGE_TYPES}


def test_list_as_a_table_shows_the_version_range() -> None:
    shown = invoke("list")
    assert shown.exit_code == 0, shown.output
    versions = len(SchemaCatalog.default().history(RunEvent.avro_name))
    line = next(line for line in shown.output.splitlines() if f" {RunEvent.avro_name} " in line)
    assert f"v1..v{versions}" in line
    assert "embedded" in next(
        line for line in shown.output.splitlines() if f" {WriteOutcome.avro_name} " in line
    )
    assert "`aoetl schema show NAME` prints one" in shown.output
    as_yaml = yaml.safe_load(invoke("list", "-o", "yaml").output)
    assert [row["name"] for row in as_yaml] == [
        row["name"] for row in json.loads(invoke("list", "-o", "json").output)
    ]


def test_show_prints_the_current_expanded_schema_by_full_or_short_name() -> None:
    current = SchemaCatalog.default().entry(PipelineResult.avro_name).json
    for name in (PipelineResult.avro_name, "PipelineResult"):
        shown = invoke("show", name, "-o", "json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output) == current
    latest = len(SchemaCatalog.default().history(PipelineResult.avro_name))
    assert json.loads(invoke("show", "PipelineResult", "-o", "json").output) == history_file(
        PipelineResult.avro_name, latest
    )  # the current schema is the history's last version
    table = invoke("show", "PipelineResult")
    assert table.exit_code == 0
    assert table.output.startswith(f"{PipelineResult.avro_name} v{latest} of {latest} (current)\n")
    assert json.loads(table.output.split("\n", 1)[1]) == current


def test_show_a_version_of_the_history() -> None:
    for flag in ("--version", "-V"):
        for version in ("1", "v1", "V1"):
            shown = invoke("show", RunEvent.avro_name, flag, version, "-o", "json")
            assert shown.exit_code == 0, shown.output
            assert json.loads(shown.output) == history_file(RunEvent.avro_name, 1)
    older = invoke("show", "RunEvent", "--version", "10")
    count = len(SchemaCatalog.default().history(RunEvent.avro_name))
    assert older.output.startswith(f"{RunEvent.avro_name} v10 of {count}\n")
    assert json.loads(older.output.split("\n", 1)[1]) == history_file(RunEvent.avro_name, 10)
    assert "(current)" not in older.output.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "Nope"], "no Avro record 'Nope' in the catalog: `aoetl schema list` shows them"),
        (["show", "RunStatus"], "no Avro record 'RunStatus'"),  # an enum: no record
        (["show", "RunEvent", "--version", "99"], "io.aoetl.RunEvent has versions v1 to v"),
        (["show", "RunEvent", "--version", "x"], "not 'x'"),
        (["show", "RunEvent", "--version", "0"], "not '0'"),
        (["show", "WriteOutcome", "-V", "1"], "io.aoetl.WriteOutcome has no versions of its own"),
    ],
)
def test_what_the_catalog_does_not_have_is_one_line_and_exit_1(args: list[str], message: str) -> None:
    shown = CliRunner().invoke(app, ["schema", *args], env={"COLUMNS": "250"})
    assert shown.exit_code == 1
    assert message in shown.output and len(shown.output.strip().splitlines()) == 1
    assert "Traceback" not in shown.output


def test_a_short_name_two_records_share_is_not_guessed() -> None:
    def record(name: str) -> SchemaEntry:
        return SchemaEntry(name, {"type": "record", "name": name, "fields": []})

    catalog = SchemaCatalog([record("a.Same"), record("b.Same"), record("a.Other")])
    assert resolve(catalog, "Same") is None
    assert resolve(catalog, "a.Same") == "a.Same" and resolve(catalog, "Other") == "a.Other"


def test_spec_is_the_json_schema_of_a_pipeline_spec() -> None:
    from shared.spec.models import PipelineSpec

    for args in (["spec"], ["spec", "-o", "json"]):
        shown = invoke(*args)
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output) == PipelineSpec.model_json_schema()
    document = yaml.safe_load(invoke("spec", "-o", "yaml").output)
    assert {"name", "source", "destination"} <= set(document["properties"])
    assert set(document["required"]) >= {"name", "source", "destination"}
