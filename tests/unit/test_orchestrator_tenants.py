"""The orchestrator's side of tenant isolation, in process (no broker: the definitions view is a dict): a
request naming another tenant's definition is REJECTED exactly as one naming no definition at all, so the
requester learns nothing of other tenants' names; a run of its own tenant's definition starts, and its
RUN_ACCEPTED and result name the request's tenant."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from services.orchestrator.configuration import OrchestratorSettings
from services.orchestrator.service import OrchestratorService
from shared.avro.serde import AvroSerde
from shared.contracts import (
    DEFAULT_TENANT,
    EventKind,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    RunAccepted,
    RunEvent,
    RunStatus,
)
from shared.kafka.topics import Topics
from shared.processing import MessageContext, Output
from shared.spec import parse_spec

pytestmark = pytest.mark.unit

SPEC = parse_spec(
    {
        "name": "orders-feed",
        "source": {"type": "event"},
        "destination": {"type": "jsonl", "path": f"{tempfile.gettempdir()}/orders-feed"},
    }
)


class Definitions:
    """The compacted definitions view, as a dict."""

    def __init__(self, *definitions: PipelineDefinition):
        self.by_name = {d.name: d for d in definitions}

    def get(self, name: str) -> PipelineDefinition | None:
        return self.by_name.get(name)


@pytest.fixture
def orchestrator() -> OrchestratorService:
    service = OrchestratorService(OrchestratorSettings(topic_suffix=".unit"), serde=AvroSerde())
    service.definitions = Definitions(PipelineDefinition(name=SPEC.name, spec=SPEC, tenant="acme"))  # type: ignore[assignment]
    return service


def handle(service: OrchestratorService, request: PipelineRequest) -> list[Output]:
    context = MessageContext(Topics.REQUESTS + ".unit", 0, 0, request.run_id.encode(), None, [])
    outputs: Iterable[Output] = service.handle(request, context)
    return list(outputs)


def result_of(outputs: list[Output]) -> PipelineResult:
    [result] = [o.value for o in outputs if isinstance(o.value, PipelineResult)]
    assert isinstance(result, PipelineResult)
    return result


def request(definition: str, tenant: str) -> PipelineRequest:
    payload = json.dumps([{"id": 1}]).encode()
    return PipelineRequest(definition_name=definition, tenant=tenant, payload=payload)


def test_another_tenants_definition_is_rejected_as_if_it_did_not_exist(
    orchestrator: OrchestratorService,
) -> None:
    foreign = result_of(handle(orchestrator, request(SPEC.name, "globex")))
    missing = result_of(handle(orchestrator, request("no-such-pipeline", "globex")))
    assert foreign.status is missing.status is RunStatus.REJECTED
    [why_foreign], [why_missing] = foreign.errors, missing.errors
    assert why_foreign.error_class == why_missing.error_class == "UnknownDefinition"
    assert why_foreign.path == why_missing.path == "definition_name"
    assert why_foreign.message == f"no pipeline definition named {SPEC.name!r}"
    assert why_missing.message == "no pipeline definition named 'no-such-pipeline'"
    assert "acme" not in why_foreign.message
    assert foreign.tenant == missing.tenant == "globex"  # the rejection is the requester's own result


def test_the_default_tenant_does_not_see_a_named_tenants_definition(
    orchestrator: OrchestratorService,
) -> None:
    rejected = result_of(handle(orchestrator, request(SPEC.name, DEFAULT_TENANT)))
    assert rejected.status is RunStatus.REJECTED and rejected.tenant == DEFAULT_TENANT


def test_a_run_of_its_own_tenants_definition_starts_and_names_its_tenant(
    orchestrator: OrchestratorService,
) -> None:
    outputs = handle(orchestrator, request(SPEC.name, "acme"))
    assert not [o for o in outputs if isinstance(o.value, PipelineResult)]
    [accepted] = [
        o.value for o in outputs if isinstance(o.value, RunEvent) and o.value.kind is EventKind.RUN_ACCEPTED
    ]
    assert isinstance(accepted, RunEvent)
    payload = accepted.payload_as(RunAccepted)
    assert payload is not None and payload.tenant == "acme" and payload.spec == SPEC
    run = orchestrator.book.runs[accepted.run_id]
    assert run.result(RunStatus.COMPLETED, datetime.now(UTC)).tenant == "acme"


def test_each_request_planned_or_rejected_is_timed_once(orchestrator: OrchestratorService) -> None:
    from prometheus_client import REGISTRY

    def planned() -> tuple[float, float]:
        # the wall time and the loop thread's CPU time of the same span (services.orchestrator.metrics)
        wall = REGISTRY.get_sample_value("aoetl_planning_seconds_count") or 0.0
        cpu = REGISTRY.get_sample_value("aoetl_planning_cpu_seconds_count") or 0.0
        return wall, cpu

    before = planned()
    handle(orchestrator, request(SPEC.name, "acme"))
    handle(orchestrator, request("no-such-pipeline", "acme"))
    assert planned() == (before[0] + 2, before[1] + 2)
