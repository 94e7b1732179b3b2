"""The planner through its real code with a scripted chat model that emits tool calls."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from prometheus_client import REGISTRY

from shared.agent.errors import ModelConfigurationError
from shared.agent.llm import make_chat_model
from shared.agent.planner import NEEDS_LLM, IntentPlanner
from shared.agent.settings import AgentSettings
from shared.agent.tools import TOOL_NAMES
from shared.spec.models import FilterStep, PostgresDestination
from tests.unit.agent_data import write_orders_csv
from tests.unit.agent_fakes import ScriptedModel

pytestmark = pytest.mark.unit


def call(name: str, call_id: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


def propose(spec: dict[str, Any], call_id: str) -> AIMessage:
    return call("propose_spec", call_id, spec_json=json.dumps(spec))


def scripted(*replies: AIMessage | str) -> ScriptedModel:
    return ScriptedModel(messages=iter(replies))


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    return write_orders_csv(tmp_path / "orders.csv")


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    return AgentSettings(llm_model=None, agent_max_repairs=2, agent_data_roots=[tmp_path])


def orders_spec(path: Path, *, filter_column: str = "status", source_type: str = "csv") -> dict[str, Any]:
    return {
        "name": "orders",
        "source": {"type": source_type, "path": str(path)},
        "transforms": [
            {"op": "cast", "columns": {"order_id": "int64"}},
            {"op": "filter", "expr": f"{filter_column} <> 'cancelled'"},
        ],
        "quality": [{"rule": "not_null", "columns": ["order_id"], "on_fail": "quarantine"}],
        "destination": {"type": "postgres", "table": "orders"},
    }


def tool_answers(model: ScriptedModel) -> list[str]:
    return [str(m.content) for m in model.seen[-1] if isinstance(m, ToolMessage)]


def test_invented_column_is_refused_then_repaired(orders: Path, settings: AgentSettings) -> None:
    model = scripted(
        call("profile_source", "c1", path=str(orders)),
        propose(orders_spec(orders, filter_column="order_status"), "c2"),
        propose(orders_spec(orders), "c3"),
    )
    outcome = IntentPlanner(model, settings=settings).plan(
        "load orders.csv into postgres, drop cancelled orders"
    )
    assert outcome.accepted, outcome.reasons
    assert outcome.attempts == 2
    assert [c.name for c in outcome.tool_calls] == ["profile_source", "propose_spec", "propose_spec"]
    assert [c.ok for c in outcome.tool_calls] == [True, False, True]
    assert model.bound == list(TOOL_NAMES)
    # The model was told exactly what was wrong, with the columns it may use.
    rejection = tool_answers(model)[1]
    assert rejection.startswith("REJECTED") and "unknown column 'order_status'" in rejection
    assert "status" in rejection and "transforms[1]" in rejection
    assert outcome.spec is not None and isinstance(outcome.spec.transforms[1], FilterStep)
    assert any(n.startswith("dry run: 44 sample rows in") for n in outcome.notes)
    # The profile the model saw is grounded data, including the deterministic suggestion.
    profile = json.loads(tool_answers(model)[0])
    assert {c["name"] for c in profile["columns"]} >= {"order_id", "status"}
    assert "suggested" in profile and profile["suggested"]["transforms"]


def test_invented_connector_and_unknown_connector_are_refused(orders: Path, settings: AgentSettings) -> None:
    invented = orders_spec(orders, source_type="s3")
    streaming = {**orders_spec(orders), "source": {"type": "kafka", "topic": "orders"}}
    model = scripted(propose(invented, "c1"), propose(streaming, "c2"), propose(orders_spec(orders), "c3"))
    outcome = IntentPlanner(model, settings=settings).plan("copy orders to postgres")
    assert outcome.accepted and outcome.attempts == 3
    first, second = tool_answers(model)[:2]
    assert "source" in first and "s3" in first  # parse_spec: no such connector in the spec models
    assert "'kafka' is not an available connector" in second  # a valid spec, but not in connector_catalog()


def test_repair_loop_rejects_after_max_repairs(orders: Path, settings: AgentSettings) -> None:
    bad = orders_spec(orders, filter_column="nope")
    model = scripted(
        propose(bad, "c1"), propose(bad, "c2"), propose(bad, "c3"), propose(orders_spec(orders), "c4")
    )
    outcome = IntentPlanner(model, settings=settings).plan("load orders")
    assert not outcome.accepted
    assert outcome.attempts == 3  # the first draft plus AOETL_AGENT_MAX_REPAIRS=2 repairs
    assert any("unknown column 'nope'" in r for r in outcome.reasons)
    assert "rejected after 3 drafts" in outcome.reasons[-1]
    assert len(model.seen) == 3  # the fourth (good) draft was never asked for


def test_invalid_drafts_get_precise_spec_errors(orders: Path, settings: AgentSettings) -> None:
    not_json = call("propose_spec", "c1", spec_json="{name: orders")
    bad_rule = {**orders_spec(orders), "quality": [{"rule": "mostly_fine", "column": "status"}]}
    uncastable = {**orders_spec(orders), "transforms": [{"op": "cast", "columns": {"status": "int64"}}]}
    model = scripted(not_json, propose(bad_rule, "c2"), propose(uncastable, "c3"))
    outcome = IntentPlanner(model, settings=settings).plan("load orders")
    assert not outcome.accepted
    answers = tool_answers(model)
    assert "not valid JSON" in answers[0]
    assert "quality[0]" in answers[1] and "mostly_fine" in answers[1]
    # The last draft's reasons come back in the outcome (no model call follows the last allowed draft).
    assert any(
        "dry run on 44 sample rows" in r and "cannot cast column 'status'" in r for r in outcome.reasons
    )


def test_destination_given_by_the_user_is_enforced(orders: Path, settings: AgentSettings) -> None:
    elsewhere = {**orders_spec(orders), "destination": {"type": "jsonl", "path": "out"}}
    model = scripted(propose(elsewhere, "c1"), propose(orders_spec(orders), "c2"))
    outcome = IntentPlanner(model, settings=settings).plan("load orders", destination="postgres://orders")
    assert outcome.accepted and outcome.attempts == 2
    assert outcome.spec is not None and outcome.spec.destination == PostgresDestination(table="orders")
    assert "destination: must be exactly" in tool_answers(model)[0]


def test_source_hint_is_profiled_for_the_model_up_front(orders: Path, settings: AgentSettings) -> None:
    model = scripted(propose(orders_spec(orders), "c1"))
    outcome = IntentPlanner(model, settings=settings).plan("drop cancelled orders", source_hint=str(orders))
    assert outcome.accepted and [c.name for c in outcome.tool_calls] == ["propose_spec"]
    request = str(model.seen[0][1].content)
    assert "Profile of the source" in request and '"order_id"' in request


def test_files_outside_the_data_roots_and_unknown_tools_are_refused(tmp_path: Path, orders: Path) -> None:
    settings = AgentSettings(agent_data_roots=[tmp_path / "allowed"], agent_max_turns=3)
    model = scripted(
        call("profile_source", "c1", path=str(orders)), call("run_python", "c2", code="print(1)"), "done"
    )
    outcome = IntentPlanner(model, settings=settings).plan("load orders")
    assert not outcome.accepted
    first, second = outcome.tool_calls
    assert not first.ok and "outside the allowed data roots" in first.summary
    assert not second.ok and "unknown tool 'run_python'" in second.summary
    assert "no spec was proposed within 3 model calls" in outcome.reasons


def test_text_answers_are_nudged_back_to_tool_calls(orders: Path, settings: AgentSettings) -> None:
    model = scripted("Here is your pipeline: ...", propose(orders_spec(orders), "c1"))
    outcome = IntentPlanner(model, settings=settings).plan("load orders")
    assert outcome.accepted
    assert "Answer only with tool calls" in str(model.seen[1][-1].content)


def test_model_calls_are_logged_and_counted(
    orders: Path, settings: AgentSettings, caplog: pytest.LogCaptureFixture
) -> None:
    def calls() -> float:
        return (
            REGISTRY.get_sample_value("aoetl_agent_llm_calls_total", {"model": "scripted", "outcome": "ok"})
            or 0.0
        )

    before = calls()
    reply = propose(orders_spec(orders), "c1")
    reply.usage_metadata = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}
    model = scripted(reply)
    planner = IntentPlanner(model, settings=settings.model_copy(update={"llm_model": "scripted"}))
    with caplog.at_level(logging.INFO, logger="aoetl.agent"):
        assert planner.plan("load orders").accepted
    assert calls() == before + 1
    record = next(r for r in caplog.records if r.getMessage() == "llm call")
    assert record.model == "scripted" and record.input_tokens == 120  # type: ignore[attr-defined]
    assert len(record.prompt_sha256) == 64  # type: ignore[attr-defined]
    assert record.tool_calls == ["propose_spec"]  # type: ignore[attr-defined]


def test_without_a_model_only_a_bare_path_is_planned(orders: Path, settings: AgentSettings) -> None:
    planner = IntentPlanner(None, settings=settings)
    refused = planner.plan("load orders.csv into postgres, drop cancelled orders")
    assert not refused.accepted and refused.reasons == [NEEDS_LLM]
    planned = planner.plan(str(orders), destination="postgres://orders")
    assert planned.accepted and planned.mode == "deterministic"
    assert planned.spec is not None and planned.spec.destination.type == "postgres"
    default = planner.plan(f"'{orders}'")
    assert default.spec is not None and default.spec.destination.type == "parquet"
    assert any("no destination given" in n for n in default.notes)
    missing = planner.plan(str(orders.with_name("missing.csv")))
    assert not missing.accepted and "SourceNotFoundError" in missing.reasons[0]


def test_model_settings() -> None:
    assert make_chat_model(AgentSettings(llm_model=None)) is None
    with pytest.raises(ModelConfigurationError, match="provider"):
        make_chat_model(AgentSettings(llm_model="no_such_provider:model"))


def test_missing_provider_package_is_a_configuration_error() -> None:
    # Provider packages are optional: without langchain-openai the error says what to install.
    try:
        import langchain_openai  # noqa: F401
    except ImportError:
        with pytest.raises(ModelConfigurationError, match="langchain-openai"):
            make_chat_model(AgentSettings(llm_model="openai:gpt-4o-mini", llm_api_key="sk-test"))
    else:
        model = make_chat_model(AgentSettings(llm_model="openai:gpt-4o-mini", llm_api_key="sk-test"))
        assert model is not None


def test_a_provider_that_cannot_be_built_is_a_configuration_error_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import langchain.chat_models

    def refuse(model: str, **kwargs: object) -> None:
        raise RuntimeError(f"the api_key {kwargs['api_key']} was refused")  # e.g. openai.OpenAIError

    monkeypatch.setattr(langchain.chat_models, "init_chat_model", refuse)
    with pytest.raises(ModelConfigurationError) as refused:
        make_chat_model(AgentSettings(llm_model="openai:gpt-4o-mini", llm_api_key="sk-secret-123"))
    assert "sk-secret-123" not in str(refused.value) and "refused" in str(refused.value)
