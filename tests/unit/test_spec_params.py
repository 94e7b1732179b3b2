"""Parameters: ``${params.name}`` placeholders filled from a request, validated with field paths, SQL only as
sqlglot-built string literals, and the spec policy applied to the filled spec (in process: the orchestrator's
definitions view is a dict, no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from services.orchestrator.configuration import OrchestratorSettings
from services.orchestrator.service import OrchestratorService
from shared.avro.serde import AvroSerde
from shared.contracts import (
    EventKind,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    RunAccepted,
    RunEvent,
    RunStatus,
)
from shared.kafka.topics import Topics
from shared.policy import PolicySettings, check_spec
from shared.processing import MessageContext, Output
from shared.spec import SpecError, parse_spec
from shared.spec.params import fill_parameters, fill_sql, placeholders

pytestmark = pytest.mark.unit


def spec_with(root: Path, **changes: Any) -> dict[str, Any]:
    return {
        "name": "daily",
        "source": {"type": "csv", "path": f"{root}/in/${{params.day}}.csv"},
        "transforms": [{"op": "filter", "expr": "region = ${params.region:-eu}"}],
        "destination": {"type": "jsonl", "path": f"{root}/out/${{params.day}}"},
        **changes,
    }


# ------------------------------------------------------------------------------------- filling
def test_placeholders_are_filled_in_string_values_with_defaults(tmp_path: Path) -> None:
    spec = parse_spec(spec_with(tmp_path))
    assert placeholders(spec) == {
        "day": ["source.path", "destination.path"],
        "region": ["transforms[0].expr"],
    }
    filled = fill_parameters(spec, {"day": "2026-03-01"})
    assert filled.spec.source.path == f"{tmp_path}/in/2026-03-01.csv"  # type: ignore[union-attr]
    assert filled.spec.destination.path == f"{tmp_path}/out/2026-03-01"  # type: ignore[union-attr]
    assert filled.spec.transforms[0].expr == "region = 'eu'"  # type: ignore[union-attr]
    assert filled.parameters == {"day": "2026-03-01", "region": "eu"}  # the default is shown as used


def test_a_placeholder_next_to_json_escaped_text_is_found_and_a_spec_without_one_has_none(
    tmp_path: Path,
) -> None:
    # the quick check reads the spec's JSON text: quotes, backslashes and non-ASCII text around a
    # placeholder are escaped (or not) there without hiding it
    expr = 'note = "caf\u00e9 \\ ${params.region}"'
    spec = parse_spec(spec_with(tmp_path, transforms=[{"op": "filter", "expr": expr}]))
    assert placeholders(spec)["region"] == ["transforms[0].expr"]
    plain = parse_spec(
        {
            **spec_with(tmp_path),
            "source": {"type": "csv", "path": f"{tmp_path}/a.csv"},
            "transforms": [],
            "destination": {"type": "jsonl", "path": f"{tmp_path}/out"},
        }
    )
    assert placeholders(plain) == {}


def test_a_value_is_text_it_is_not_read_again_for_placeholders(tmp_path: Path) -> None:
    filled = fill_parameters(parse_spec(spec_with(tmp_path)), {"day": "${params.region}"})
    assert filled.spec.source.path == f"{tmp_path}/in/${{params.region}}.csv"  # type: ignore[union-attr]


def test_missing_and_unknown_parameters_are_issues_with_their_paths(tmp_path: Path) -> None:
    spec = parse_spec(spec_with(tmp_path))
    with pytest.raises(SpecError) as missing:
        fill_parameters(spec, {})
    assert [(i.path, i.reason) for i in missing.value.issues] == [
        ("source.path", "parameter 'day' is not given and has no default"),
        ("destination.path", "parameter 'day' is not given and has no default"),
    ]
    with pytest.raises(SpecError) as unknown:
        fill_parameters(spec, {"day": "d", "dya": "typo"})
    assert [i.path for i in unknown.value.issues] == ["parameters.dya"]


def test_a_spec_without_placeholders_keeps_its_parameters_as_metadata(tmp_path: Path) -> None:
    spec = parse_spec({**spec_with(tmp_path), "source": {"type": "event"}, "transforms": [],
                       "destination": {"type": "jsonl", "path": str(tmp_path)}})  # fmt: skip
    filled = fill_parameters(spec, {"commit": "abc"})
    assert filled.spec == spec and filled.parameters == {"commit": "abc"}


def test_the_filled_spec_is_validated_again(tmp_path: Path) -> None:
    rule = {"rule": "regex", "column": "region", "pattern": "^${params.code}$"}
    spec = parse_spec(spec_with(tmp_path, quality=[rule]))
    assert fill_parameters(spec, {"day": "d", "code": "[a-z]{2}"}).spec.quality[0].pattern == "^[a-z]{2}$"  # type: ignore[union-attr]
    with pytest.raises(SpecError) as invalid:  # the filled pattern is not a regular expression
        fill_parameters(spec, {"day": "d", "code": "(("})
    [issue] = invalid.value.issues
    assert issue.path.startswith("quality[0]") and "invalid regular expression" in issue.reason


# ------------------------------------------------------------------------------------------- SQL
@pytest.mark.parametrize(
    "hostile",
    ["x' OR '1'='1", "x'; DROP TABLE batch; --", "x\\' OR 1=1 --", "eu')) OR ((1=1", "' UNION SELECT 1 --"],
)
def test_a_hostile_sql_value_stays_one_string_literal(hostile: str) -> None:
    filled, problem = fill_sql("region = ${params.region}", [hostile], "duckdb")
    assert problem is None
    batch = pa.table({"region": ["eu", "us", hostile]})  # noqa: F841 (read by DuckDB by name)
    con = duckdb.connect()
    kept = con.execute(f"SELECT region FROM batch WHERE {filled}").fetchall()
    assert kept == [(hostile,)]  # compared as a value: exactly the row equal to it, never every row


def test_a_quoted_placeholder_in_sql_is_refused() -> None:
    _, problem = fill_sql("region = '${params.region}'", ["eu"], "duckdb")
    assert problem and "unquoted" in problem


def test_a_numeric_parameter_in_sql_is_cast_from_its_literal() -> None:
    filled, problem = fill_sql("amount > CAST(${params.min} AS INT)", ["10"], "duckdb")
    assert (filled, problem) == ("amount > CAST('10' AS INT)", None)
    _, bad = fill_sql("amount > CAST(${params.min} AS INT)", ["10 OR 1=1"], "duckdb")
    assert bad is None  # still one literal: the cast fails at run time, nothing else runs


# --------------------------------------------------------------------------- policy after filling
def test_the_policy_sees_the_filled_spec(tmp_path: Path) -> None:
    policy = PolicySettings(data_roots=(tmp_path,))
    spec = parse_spec(spec_with(tmp_path))
    assert check_spec(spec, policy) == []  # the template is inside the root
    escaped = fill_parameters(spec, {"day": "../../../../etc/passwd"}).spec
    assert any(i.path.startswith("source") for i in check_spec(escaped, policy))


# ----------------------------------------------------------------------------- in the orchestrator
@pytest.fixture
def orchestrator(tmp_path: Path) -> OrchestratorService:
    service = OrchestratorService(OrchestratorSettings(topic_suffix=".unit"), serde=AvroSerde())
    service.policy = PolicySettings(data_roots=(tmp_path,))
    spec = parse_spec(spec_with(tmp_path, source={"type": "event"}))
    service.definitions = {"daily": PipelineDefinition(name="daily", spec=spec)}  # type: ignore[assignment]
    return service


def handle(service: OrchestratorService, request: PipelineRequest) -> list[Output]:
    context = MessageContext(Topics.REQUESTS + ".unit", 0, 0, request.run_id.encode(), None, [])
    outputs: Iterable[Output] = service.handle(request, context)
    return list(outputs)


def run(service: OrchestratorService, **parameters: str) -> list[Output]:
    payload = json.dumps([{"region": "eu"}]).encode()
    return handle(service, PipelineRequest(definition_name="daily", parameters=parameters, payload=payload))


def rejected(outputs: list[Output]) -> list[tuple[str | None, str]]:
    [result] = [o.value for o in outputs if isinstance(o.value, PipelineResult)]
    assert isinstance(result, PipelineResult) and result.status is RunStatus.REJECTED
    return [(e.path, e.error_class) for e in result.errors]


def test_a_run_gets_the_filled_spec_and_shows_its_parameters(orchestrator: OrchestratorService) -> None:
    outputs = run(orchestrator, day="2026-03-01", region="us")
    [accepted] = [
        o.value for o in outputs if isinstance(o.value, RunEvent) and o.value.kind is EventKind.RUN_ACCEPTED
    ]
    payload = accepted.payload_as(RunAccepted)
    assert payload is not None and payload.parameters == {"day": "2026-03-01", "region": "us"}
    assert payload.spec is not None and payload.spec.destination.path.endswith("/out/2026-03-01")  # type: ignore[union-attr]
    assert payload.spec.transforms[0].expr == "region = 'us'"  # type: ignore[union-attr]
    [run_state] = orchestrator.book.runs.values()
    assert run_state.result(RunStatus.COMPLETED, accepted.at).parameters == {
        "day": "2026-03-01",
        "region": "us",
    }


def test_missing_and_unknown_parameters_are_rejected_with_paths(orchestrator: OrchestratorService) -> None:
    assert rejected(run(orchestrator)) == [("spec.destination.path", "ParameterError")]
    assert rejected(run(orchestrator, day="d", color="red")) == [("parameters.color", "ParameterError")]


def test_a_parameter_that_escapes_the_data_root_is_rejected_by_the_policy(
    orchestrator: OrchestratorService,
) -> None:
    reasons = rejected(run(orchestrator, day="../../../../../tmp/elsewhere"))
    assert reasons and all(cls == "PolicyViolation" for _, cls in reasons)
    assert any(path and path.startswith("spec.destination") for path, _ in reasons)
