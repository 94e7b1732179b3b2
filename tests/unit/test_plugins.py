"""Plugins: the registry loads the built-ins and the installed example plugin through one protocol per
kind, reports a bad plugin in one line without failing, validates a plugin's section with its own model
(errors with field paths), carries it over Avro, shows it in the catalog and the JSON Schema, and applies
the spec policy to the fields it declares."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pyarrow as pa
import pytest

from services.load.sinks.factory import BUILTIN_DESTINATIONS, destination_kind, open_sink
from shared.agent.catalog import spec_vocabulary
from shared.avro.serde import AvroSerde
from shared.connectors import connector_catalog, plan_splits, read_split
from shared.connectors.base import Connector
from shared.connectors.registry import BUILTIN_CONNECTORS
from shared.contracts import PipelineRequest
from shared.destinations import DestinationKind, Sink
from shared.plugins import installed, load_plugins, registry
from shared.policy import PolicySettings, check_spec
from shared.policy.connections import Connection, ConnectionKind
from shared.spec import PipelineSpec, SpecError, parse_spec
from shared.transform.engine import TransformEngine
from shared.transform.errors import InvalidStepError, UnknownColumnError
from shared.transform.steps import BUILTIN_STEPS, StepKind, step_kinds

pytestmark = pytest.mark.unit

FAKES = "tests.unit.plugin_fakes"


def point(name: str, target: str, group: str = "aoetl.sources") -> EntryPoint:
    return EntryPoint(name=name, value=target, group=group)


@pytest.fixture
def with_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed example plugin plus the fakes, as this process's registry."""
    real = list(_installed_points())
    fakes = [
        point("guarded", f"{FAKES}:guarded"),
        point("explode", f"{FAKES}:explode", "aoetl.transforms"),
        point("broken", "tests.unit.no_such_module:plugin"),
    ]
    monkeypatch.setattr(registry, "_installed", load_plugins([*real, *fakes]))
    yield


def _installed_points() -> Iterator[EntryPoint]:
    from importlib.metadata import entry_points

    for group in registry.GROUPS.values():
        yield from entry_points(group=group)


def example_spec(root: Path, **overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "plugin-demo",
        "source": {"type": "example_rows", "rows": 25, "seed": 7},
        "transforms": [{"op": "uppercase", "columns": ["name"]}, {"op": "filter", "expr": "amount >= 0"}],
        "destination": {"type": "jsonl_runs", "path": str(root / "out")},
    }
    spec.update(overrides)
    return spec


# -------------------------------------------------------------------------------------- the registry
def test_the_example_plugin_is_installed_and_loads_through_its_entry_points() -> None:
    plugins = installed()
    assert plugins.failures == (), [str(f) for f in plugins.failures]
    assert set(plugins.sources) >= {"example_rows"}, (
        "install it: make bootstrap (pip install -e examples/...)"
    )
    assert set(plugins.steps) >= {"uppercase"} and set(plugins.destinations) >= {"jsonl_runs"}
    assert plugins.origins["source:example_rows"] == "aoetl-example-plugin 0.1.0"


def test_built_ins_and_plugins_are_one_registry_of_one_protocol_per_kind() -> None:
    for connector in [*BUILTIN_CONNECTORS.values(), *installed().sources.values()]:
        assert isinstance(connector, Connector)
    assert set(connector_catalog()) == set(BUILTIN_CONNECTORS) | set(installed().sources)
    kinds = step_kinds()
    assert set(kinds) == set(BUILTIN_STEPS) | {"uppercase"} | set(installed().steps)
    assert all(isinstance(kinds[op], StepKind) for op in ("select", "rename", "cast", "fill", "dedupe"))
    assert isinstance(kinds["uppercase"], StepKind)
    for name in [*BUILTIN_DESTINATIONS, "jsonl_runs"]:
        assert isinstance(destination_kind(name), DestinationKind)


@pytest.mark.parametrize(
    ("entry_point", "reason"),
    [
        (point("broken", "tests.unit.no_such_module:plugin"), "cannot import it: ModuleNotFoundError"),
        (point("guarded", f"{FAKES}:no_such_attribute"), "cannot import it: AttributeError"),
        (point("guarded", f"{FAKES}:no_read"), "it lacks read"),
        (point("plain", f"{FAKES}:plain_model"), "subclass of shared.spec.plugins.PluginSource"),
        (point("mine", f"{FAKES}:wrong_name"), "must be Literal['mine']"),
        (point("csv", f"{FAKES}:builtin_clash"), "'csv' is a built-in source type"),
        (point("sneaky", f"{FAKES}:sneaky"), "output_dir, token_env look like paths"),
        (point("opaque", f"{FAKES}:opaque"), "its model has no JSON Schema: TypeError"),
        (point("guarded", f"{FAKES}:guarded", "aoetl.destinations"), "lacks description, open"),
    ],
    ids=lambda v: v.value if isinstance(v, EntryPoint) else "",
)
def test_a_bad_plugin_is_one_line_naming_the_entry_point_and_why(
    entry_point: EntryPoint, reason: str
) -> None:
    plugins = load_plugins([entry_point, point("guarded", f"{FAKES}:guarded")])
    (failure,) = plugins.failures
    line = str(failure)
    assert "\n" not in line and reason in line, line
    assert f"plugin {entry_point.name!r} ({entry_point.group} = {entry_point.value}) not loaded" in line
    assert entry_point.name not in plugins.of("source") or entry_point.name == "guarded"
    assert "guarded" in plugins.sources  # the good one beside it is registered all the same


def test_a_second_plugin_of_the_same_type_is_refused() -> None:
    plugins = load_plugins([point("guarded", f"{FAKES}:guarded"), point("guarded", f"{FAKES}:guarded")])
    assert list(plugins.sources) == ["guarded"]
    assert "already provided by another plugin" in str(plugins.failures[0])


def test_start_up_logs_each_failure_as_one_error_line(
    with_plugins: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        registry.report_plugins()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "plugin 'broken' (aoetl.sources = tests.unit.no_such_module:plugin) not loaded: cannot import it: "
        "ModuleNotFoundError: No module named 'tests.unit.no_such_module'"
    ]
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("source:example_rows (aoetl-example-plugin 0.1.0)" in line for line in info)


# ------------------------------------------------------------------------------------ spec validation
def test_a_plugin_section_is_validated_by_the_plugin_model(tmp_path: Path) -> None:
    spec = parse_spec(example_spec(tmp_path))
    assert type(spec.source).__name__ == "ExampleRowsSource" and spec.source.type == "example_rows"
    assert [type(step).__name__ for step in spec.transforms] == ["UppercaseStep", "FilterStep"]
    assert type(spec.destination).__name__ == "JsonlRunsDestination"
    assert PipelineSpec.model_validate(spec.model_dump(mode="json")) == spec  # dump and validate agree


def test_plugin_validation_errors_have_field_paths(tmp_path: Path) -> None:
    bad = example_spec(
        tmp_path,
        source={"type": "example_rows", "rows": -1, "sed": 3},
        transforms=[{"op": "filter", "expr": "true"}, {"op": "uppercase", "columns": []}],
        destination={"type": "jsonl_runs"},
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(bad)
    paths = {issue.path: issue.reason for issue in caught.value.issues}
    assert set(paths) == {
        "source.example_rows.rows",
        "source.example_rows.sed",
        "transforms[1].uppercase.columns",
        "destination.jsonl_runs.path",
    }
    assert "greater than or equal to 0" in paths["source.example_rows.rows"]
    assert "Extra inputs are not permitted" in paths["source.example_rows.sed"]


def test_only_installed_plugins_can_be_named_and_a_failed_one_says_why(with_plugins: None) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(
            {"name": "p", "source": {"type": "broken"}, "destination": {"type": "jsonl", "path": "/t"}}
        )
    (issue,) = caught.value.issues
    assert issue.path == "source.type"
    assert "unknown source type 'broken'" in issue.reason
    assert "'example_rows'" in issue.reason and "'guarded'" in issue.reason  # what is installed
    assert "ModuleNotFoundError" in issue.reason  # and why 'broken' is not
    with pytest.raises(SpecError, match=r"transforms\[0\]\.op: unknown step op 'shout'"):
        parse_spec({"name": "p", "source": {"type": "event"}, "transforms": [{"op": "shout"}],
                    "destination": {"type": "jsonl", "path": "/t"}})  # fmt: skip


def test_a_plugin_spec_travels_over_avro_and_is_validated_again_on_read(tmp_path: Path) -> None:
    request = PipelineRequest(spec=parse_spec(example_spec(tmp_path)))
    serde = AvroSerde()
    decoded = serde.decode(serde.encode(request), PipelineRequest)
    assert decoded == request
    assert type(decoded.spec.source) is type(request.spec.source)  # type: ignore[union-attr]


def test_plugins_are_in_the_json_schema_and_the_agent_catalog() -> None:
    schema = PipelineSpec.model_json_schema()
    text = json.dumps(schema)
    for tag in ("example_rows", "uppercase", "jsonl_runs"):
        assert (
            json.dumps({"const": tag, "default": tag, "title": "Type" if tag != "uppercase" else "Op"})[1:-1]
            in text
        )
    source_branches = schema["properties"]["source"]["oneOf"]
    assert any(b.get("title") == "ExampleRowsSource" for b in source_branches)
    vocabulary = spec_vocabulary()
    assert vocabulary["sources"]["example_rows"]["options"]["rows"] == "how many rows to generate (required)"
    assert (
        "uppercase" in vocabulary["transform_ops"] and "columns" in vocabulary["transform_ops"]["uppercase"]
    )
    assert "path" in vocabulary["destinations"]["jsonl_runs"]


# ------------------------------------------------------------------------------------------ the policy
def test_the_policy_applies_to_a_plugin_path_field(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    policy = PolicySettings(data_roots=(root,))
    inside = parse_spec(example_spec(root))
    assert check_spec(inside, policy) == []
    outside = parse_spec(example_spec(tmp_path, destination={"type": "jsonl_runs", "path": "/etc/cron.d"}))
    (issue,) = check_spec(outside, policy)
    assert issue.path == "destination.jsonl_runs.path" and "outside the data roots" in issue.reason
    dotted = parse_spec(example_spec(tmp_path, destination={"type": "jsonl_runs", "path": f"{root}/../x"}))
    assert [i.path for i in check_spec(dotted, policy)] == ["destination.jsonl_runs.path"]


def test_the_policy_applies_to_every_declared_kind_of_field(with_plugins: None, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    policy = PolicySettings(
        data_roots=(root,),
        connections={
            "api": Connection(kind=ConnectionKind.HTTP, env="API_TOKEN", hosts=["api.example.com"]),
            "db": Connection(env="DB_DSN"),
        },
    )
    source = {
        "type": "guarded",
        "input_path": "/etc/passwd",
        "url": "http://169.254.169.254/latest/meta-data",
        "query": "DELETE FROM orders",
        "topic": "aoetl.requests",
        "connection": "db",
        "extra_paths": [str(root / "ok.csv"), "/root/*.csv"],
    }
    spec = parse_spec({"name": "p", "source": source, "destination": {"type": "jsonl", "path": str(root)}})
    issues = {issue.path: issue.reason for issue in check_spec(spec, policy)}
    assert set(issues) == {
        "source.guarded.input_path",
        "source.guarded.url",
        "source.guarded.query",
        "source.guarded.topic",
        "source.guarded.connection",
        "source.guarded.extra_paths",
    }
    assert "not a http one" in issues["source.guarded.connection"]
    assert "internal" in issues["source.guarded.topic"]
    allowed = {
        "type": "guarded",
        "url": "https://api.example.com/v1",
        "connection": "api",
        "query": "SELECT 1",
    }
    ok = parse_spec({"name": "p", "source": allowed, "destination": {"type": "jsonl", "path": str(root)}})
    assert check_spec(ok, policy) == []
    elsewhere = {**allowed, "url": "https://evil.example.net/"}
    refused = parse_spec(
        {"name": "p", "source": elsewhere, "destination": {"type": "jsonl", "path": str(root)}}
    )
    assert [i.path for i in check_spec(refused, policy)] == ["source.guarded.connection"]
    assert check_spec(ok, policy, tenant="acme")[0].reason == "tenant 'acme' may not use connection 'api'"


# ----------------------------------------------------------------------------- running the example
def test_the_example_source_is_the_same_rows_whatever_the_splits(tmp_path: Path) -> None:
    source = parse_spec(
        example_spec(tmp_path, source={"type": "example_rows", "rows": 1000, "seed": 3})
    ).source

    def rows(parallelism: int | None, batch_rows: int) -> list[dict[str, object]]:
        splits = plan_splits(source, parallelism, batch_rows=batch_rows)
        assert [s.index for s in splits] == list(range(len(splits)))
        return [r for s in splits for t in read_split(source, s, batch_rows) for r in t.to_pylist()]

    once = rows(1, 1000)
    assert [r["id"] for r in once] == list(range(1000))
    assert rows(7, 64) == once and rows(None, 100) == once
    assert len(plan_splits(source, None, batch_rows=100)) == 10
    other_seed = parse_spec(example_spec(tmp_path, source={"type": "example_rows", "rows": 1000, "seed": 4}))
    assert rows_of(other_seed.source) != once


def rows_of(source: object) -> list[dict[str, object]]:
    return [r for s in plan_splits(source, 1) for t in read_split(source, s, 500) for r in t.to_pylist()]  # type: ignore[arg-type]


def test_plugin_steps_run_between_fused_sql_steps(tmp_path: Path) -> None:
    steps = parse_spec(
        example_spec(
            tmp_path,
            transforms=[
                {"op": "filter", "expr": "amount > 10"},
                {"op": "uppercase", "columns": ["name"]},
                {"op": "derive", "column": "shout", "expr": "name || '!'"},
            ],
        )
    ).transforms
    table = pa.table({"name": ["ab", None, "cd"], "amount": [5, 20, 30]})
    with TransformEngine(steps) as engine:
        out = engine.apply(table)
        assert out.to_pylist() == [
            {"name": None, "amount": 20, "shout": None},
            {"name": "CD", "amount": 30, "shout": "CD!"},
        ]
        assert engine.output_columns(["name", "amount"]) == ["name", "amount", "shout"]
        with pytest.raises(UnknownColumnError, match=r"transforms\[1\] \(uppercase\)"):
            engine.output_columns(["amount"])


def test_a_plugin_step_that_raises_is_a_step_error_naming_it(with_plugins: None, tmp_path: Path) -> None:
    steps = parse_spec(example_spec(tmp_path, transforms=[{"op": "explode"}])).transforms
    with TransformEngine(steps) as engine, pytest.raises(InvalidStepError) as caught:
        engine.apply(pa.table({"x": [1]}))
    assert str(caught.value).startswith("transforms[0] (explode): the step failed: KeyError")
    assert not caught.value.transient


def test_the_example_destination_applies_each_batch_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOETL_POLICY_DATA_ROOTS", json.dumps([str(tmp_path)]))
    destination = parse_spec(example_spec(tmp_path)).destination
    sink = open_sink(destination)
    assert isinstance(sink, Sink)
    first, second = pa.table({"id": [1, 2]}), pa.table({"id": [3]})
    assert sink.write("run-1", "t0:1", first).applied
    again = sink.write("run-1", "t0:1", first)  # a redelivery
    assert (again.applied, again.rows_written) == (False, 2)
    assert sink.write("run-1", "t0:2", second).rows_written == 1
    sink.finalize("run-1")
    sink.finalize("run-1")  # idempotent
    run_file = tmp_path / "out" / "run-1.jsonl"
    assert [json.loads(line)["id"] for line in run_file.read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run-1.jsonl"]  # parts dropped
    sink.write("run-2", "t0:1", first)
    sink.abort("run-2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run-1.jsonl"]
    with pytest.raises(Exception, match="dedupe"):
        sink.write("run-3", "t0:1", first, dedupe_keys=["id"])


# ---------------------------------------------------------------------------- the doors: CLI, gateway
def test_aoetl_validate_accepts_a_plugin_spec_and_refuses_its_bad_fields(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aoetl.cli import app

    good = tmp_path / "good.yaml"
    good.write_text(json.dumps(example_spec(tmp_path)))
    result = CliRunner().invoke(app, ["validate", str(good)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "example_rows" in result.output and "jsonl_runs" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps(example_spec(tmp_path, destination={"type": "jsonl_runs", "path": "/etc"})))
    result = CliRunner().invoke(app, ["validate", str(bad)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "destination.jsonl_runs.path" in " ".join(result.output.split())
    typo = tmp_path / "typo.yaml"
    typo.write_text(json.dumps(example_spec(tmp_path, source={"type": "example_rows", "rowz": 3})))
    result = CliRunner().invoke(app, ["validate", str(typo)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "source.example_rows.rowz" in " ".join(result.output.split())


def test_the_gateway_openapi_document_describes_plugin_sections() -> None:
    from fastapi.testclient import TestClient

    from services.gateway.app import create_app
    from tests.unit.gateway_support import FakeBus, make_gateway

    document = TestClient(create_app(make_gateway(FakeBus()))).get("/openapi.json").json()
    schemas = json.dumps(document["components"]["schemas"])
    for tag in ("example_rows", "uppercase", "jsonl_runs"):
        assert f'"const": "{tag}"' in schemas


def test_a_plugin_reads_a_secret_only_through_a_declared_connection_field(
    with_plugins: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.policy.errors import PolicyViolation
    from shared.policy.plugins import plugin_connection

    monkeypatch.setenv("API_TOKEN", "Bearer s3cret-token")
    api = Connection(kind=ConnectionKind.HTTP, env="API_TOKEN", hosts=["api.example.com"], tenants=["acme"])
    policy = PolicySettings(connections={"api": api})
    source = {"type": "guarded", "url": "https://api.example.com/v1", "connection": "api"}
    section = parse_spec(
        {"name": "p", "source": source, "destination": {"type": "jsonl", "path": "/t"}}
    ).source
    assert plugin_connection(section, "connection", policy=policy).secret() == "Bearer s3cret-token"
    with pytest.raises(PolicyViolation, match="tenant 'other' may not use connection 'api'"):
        plugin_connection(section, "connection", tenant="other", policy=policy)
    with pytest.raises(PolicyViolation, match="not declared a connection"):
        plugin_connection(section, "url", policy=policy)
    moved = parse_spec({"name": "p", "source": {**source, "url": "https://elsewhere.example.org/"},
                        "destination": {"type": "jsonl", "path": "/t"}}).source  # fmt: skip
    with pytest.raises(PolicyViolation, match="may not send its credentials"):
        plugin_connection(moved, "connection", policy=policy)
