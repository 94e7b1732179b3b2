"""The orchestrator on a real (plain) broker picks up requests written to a tenant's own request topic,
one created after it started included (librdkafka's pattern subscription, ``tenant_requests_pattern``),
and runs them as the topic's tenant: a request there claiming another tenant is REJECTED with the reason.
The secured broker's side (who may write those topics) is ``tests/e2e/test_secure_stack.py``."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aoetl.client import AoetlClient
from services.orchestrator.configuration import OrchestratorSettings
from services.orchestrator.service import OrchestratorService
from shared.contracts import EventKind, PipelineRequest, PipelineResult, RunEvent, RunStatus
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import produce_sync
from shared.kafka.topics import TOPICS, Topics, TopicSpec, tenant_request_topics, tenant_requests_topic
from shared.settings import KafkaSettings, ServiceSettings
from shared.signals import GracefulShutdown
from shared.spec import parse_spec
from shared.startup import publish_writer_schemas
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def suffix(kafka_bootstrap: str) -> str:
    suffix = f".tenants{uuid.uuid4().hex[:8]}"
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [TopicSpec(t.name + suffix, t.partitions, dict(t.config)) for t in TOPICS],
    )
    return suffix


@pytest.fixture
def orchestrator(kafka_bootstrap: str, suffix: str) -> Iterator[OrchestratorService]:
    settings = OrchestratorSettings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topic_suffix=suffix,
        group_id=f"aoetl-orchestrator{suffix}",
        instance_id=f"orchestrator-{uuid.uuid4().hex[:6]}",
        tenant_topics_refresh_s=1.0,
        session_timeout_ms=6000,
    )
    service = OrchestratorService(settings)
    shutdown = GracefulShutdown()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            if publish_writer_schemas(service.settings, service.serde, shutdown):
                service.run(shutdown)
        except BaseException as exc:
            failures.append(exc)
            raise

    thread = threading.Thread(target=serve, name="orchestrator-in-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: failures or service.loop.is_ready(), 90, message="the orchestrator ready")
        assert not failures, f"the orchestrator failed at start: {failures[0]!r}"
        yield service
    finally:
        shutdown.request("the test is over")
        thread.join(60)
    assert not thread.is_alive() and not failures, failures


def test_a_request_on_a_tenant_topic_created_later_is_run_as_the_topics_tenant(
    kafka_bootstrap: str, suffix: str, orchestrator: OrchestratorService, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    # the tenant arrives after the orchestrator subscribed: no restart
    ensure_topics(kafka, tenant_request_topics(["acme"], suffix))
    (tmp_path / "in.csv").write_text("id\n1\n2\n")
    spec = parse_spec(
        {
            "name": "tenant-orders",
            "source": {"type": "csv", "path": str(tmp_path / "in.csv")},
            "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
        }
    )
    client = AoetlClient(ServiceSettings(kafka=kafka, topic_suffix=suffix))
    own = PipelineRequest(spec=spec, tenant="acme")
    claims_other = PipelineRequest(spec=spec, tenant="globex")
    topic = tenant_requests_topic("acme", suffix)
    try:
        with client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=True) as reader:
            for request in (own, claims_other):
                produce_sync(client._producer, topic, client.serde.encode(request), key=request.run_id)
            accepted: list[RunEvent] = []
            results: dict[str, PipelineResult] = {}

            def both_answered() -> bool:
                for _, value in reader.poll({Topics.EVENTS: RunEvent, Topics.RESULTS: PipelineResult}):
                    if isinstance(value, RunEvent) and value.run_id == own.run_id:
                        if value.kind is EventKind.RUN_ACCEPTED:
                            accepted.append(value)
                    elif isinstance(value, PipelineResult):
                        results[value.run_id] = value
                return bool(accepted) and claims_other.run_id in results

            wait_until(both_answered, timeout=90, interval=0, message="the tenant topic's requests answered")
    finally:
        client.close()
    assert orchestrator.book.runs[own.run_id].tenant == "acme"
    assert own.run_id not in results  # planned, waiting for extract (not running here): no result yet
    rejected = results[claims_other.run_id]
    assert rejected.status is RunStatus.REJECTED
    assert [e.message for e in rejected.errors] == ["request on tenant acme's topic claims tenant globex"]
