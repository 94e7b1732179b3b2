"""The evaluation runner's property checks and its no-model behaviour (the real run needs a model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from shared.agent.planner import IntentPlanner
from shared.agent.profile import profile_source
from shared.agent.settings import AgentSettings
from shared.agent.suggest import parse_destination_uri, suggest_spec
from shared.spec.models import CsvSource
from tests.agent_eval.__main__ import FIXTURES, check, main, run
from tests.unit.agent_fakes import ScriptedModel

pytestmark = pytest.mark.unit


def test_without_a_model_the_runner_says_so_and_succeeds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AOETL_LLM_MODEL", raising=False)
    assert main([]) == 0
    assert "AOETL_LLM_MODEL is not set" in capsys.readouterr().out


def test_property_checks_on_a_suggested_spec() -> None:
    profile = profile_source(CsvSource(path=str(FIXTURES / "orders.csv")))
    spec = suggest_spec(profile, parse_destination_uri("duckdb:warehouse.db#orders")).spec
    good = {
        "destination": {"type": "duckdb", "table": "orders"},
        "masked": ["customer_email"],
        "dedupe_keys": ["order_id"],
        "casts": {"amount": "float64", "order_date": "date"},
        "rules_include": ["not_null"],
    }
    assert check(spec, good) == []
    bad = {
        "destination": {"table": "x"},
        "ops_include": ["filter"],
        "masked": ["status"],
        "expr_mentions": ["cancelled"],
    }
    assert len(check(spec, bad)) == 4
    assert check(None, {"accepted": False}) == [] and check(spec, {"accepted": False})


def test_runner_with_a_scripted_model(tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_bytes((FIXTURES / "orders.csv").read_bytes())
    spec = {
        "name": "orders",
        "source": {"type": "csv", "path": str(source)},
        "transforms": [{"op": "filter", "expr": "status <> 'cancelled'"}],
        "destination": {"type": "postgres", "table": "orders"},
    }
    reply = AIMessage(
        content="", tool_calls=[{"name": "propose_spec", "args": {"spec_json": json.dumps(spec)}, "id": "1"}]
    )
    planner = IntentPlanner(
        ScriptedModel(messages=iter([reply])), settings=AgentSettings(agent_data_roots=[tmp_path])
    )
    case = {
        "id": "c",
        "intent": "load {source} into postgres table orders, drop cancelled orders",
        "source": "orders.csv",
        "expect": {"destination": {"type": "postgres", "table": "orders"}, "expr_mentions": ["cancelled"]},
    }
    [result] = run(planner, [case], tmp_path)
    assert result.passed and result.attempts == 1, result.failures
