"""The example plugin end to end on the real stack: its source is planned by the orchestrator and read by
the extract replicas, its step runs in the transform replicas between built-in steps, its destination is
written by the load replicas, and the result is exactly the rows the source defines (computed here, not by
the plugin). Its sections cross every topic as the Avro plugin envelope; the services' policy applies to
its declared path; a type no service has installed is REJECTED with its field path."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from shared.avro.convert import to_datum
from shared.contracts import PipelineRequest, RunStatus, Stage
from shared.kafka.clients import produce_sync
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import assert_completed, await_result, run_spec, stage

pytestmark = pytest.mark.e2e

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett")


def expected_rows(rows: int, seed: int) -> list[dict[str, object]]:
    """The example source's documented rows (its module docstring), computed independently of it."""
    out = []
    for row_id in range(rows):
        mixed = (row_id * 2_654_435_761 + seed * 40_503) % 2**32
        out.append({"id": row_id, "name": WORDS[mixed % 10], "amount": mixed % 1000})
    return out


def plugin_spec(name: str, destination: dict, *, rows: int, seed: int) -> dict:
    return {
        "name": name,
        "source": {"type": "example_rows", "rows": rows, "seed": seed},
        "transforms": [
            {"op": "filter", "expr": "amount >= 250"},
            {"op": "uppercase", "columns": ["name"]},
            {"op": "derive", "column": "tag", "expr": "name || '-' || CAST(id AS VARCHAR)"},
        ],
        "destination": destination,
        "run": {"parallelism": 4, "batch_rows": 700},
    }


def transformed(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    kept = [r for r in rows if int(r["amount"]) >= 250]  # type: ignore[call-overload]
    return [{**r, "name": str(r["name"]).upper(), "tag": f"{str(r['name']).upper()}-{r['id']}"} for r in kept]


def test_plugin_source_step_and_destination_end_to_end(system: System, tmp_path: Path) -> None:
    out = tmp_path / "out"
    want = transformed(expected_rows(6_000, seed=11))
    result = run_spec(
        system, plugin_spec("plugin-e2e-files", {"type": "jsonl_runs", "path": str(out)}, rows=6_000, seed=11)
    )
    assert_completed(result)
    assert stage(result, Stage.EXTRACT).rows_out == 6_000
    assert stage(result, Stage.LOAD).rows_out == len(want)
    (run_file,) = [p for p in out.iterdir() if p.suffix == ".jsonl"]  # the parts are gone: one file per run
    assert run_file.name == f"{result.run_id}.jsonl"
    got = [json.loads(line) for line in run_file.read_text().splitlines()]
    assert len(got) == len(want) and len({r["id"] for r in got}) == len(want)  # exactly once
    assert sorted(got, key=lambda r: r["id"]) == want
    assert [(w.destination, w.target, w.rows) for w in result.written] == [
        ("jsonl_runs", str(out), len(want))
    ]


def test_plugin_source_and_step_into_a_built_in_destination(system: System, postgres_dsn: str) -> None:
    table = f"plugin_{uuid.uuid4().hex[:8]}"
    want = transformed(expected_rows(4_000, seed=5))
    result = run_spec(
        system, plugin_spec("plugin-e2e-pg", {"type": "postgres", "table": table}, rows=4_000, seed=5)
    )
    assert_completed(result)
    with psycopg.connect(postgres_dsn) as con:
        got = con.execute(
            f"SELECT count(*), count(DISTINCT id), sum(id), sum(amount),"
            f" count(*) FILTER (WHERE name <> upper(name)), count(DISTINCT tag) FROM {table}"
        ).fetchone()
    assert got == (
        len(want),
        len(want),
        sum(int(r["id"]) for r in want),  # type: ignore[call-overload]
        sum(int(r["amount"]) for r in want),  # type: ignore[call-overload]
        0,
        len(want),
    )


def test_the_policy_and_the_installed_types_decide_what_a_plugin_spec_may_say(
    system: System, tmp_path: Path
) -> None:
    outside = plugin_spec("plugin-e2e-refused", {"type": "jsonl_runs", "path": "/etc/aoetl"}, rows=10, seed=1)
    result = run_spec(system, outside)
    assert result.status is RunStatus.REJECTED
    assert [e.path for e in result.errors] == ["spec.destination.jsonl_runs.path"]

    # Avro-valid, but naming a plugin type no service has installed (written as the envelope directly)
    good = PipelineRequest(
        spec=parse_spec(
            plugin_spec("plugin-e2e-unknown", {"type": "jsonl", "path": str(tmp_path)}, rows=1, seed=1)
        )
    )
    datum = to_datum(good)
    datum["spec"]["source"] = ("io.aoetl.spec.PluginSource", {"type": "not_installed", "options": "{}"})
    raw = system.client.serde.encode_record(PipelineRequest.avro_name, datum)
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        produce_sync(system.client._producer, system.client.topic(Topics.REQUESTS), raw, key=good.run_id)
        rejected = await_result(reader, good.run_id)
    assert rejected.status is RunStatus.REJECTED
    (error,) = rejected.errors
    assert error.path == "spec.source.type" and "unknown source type 'not_installed'" in error.message
