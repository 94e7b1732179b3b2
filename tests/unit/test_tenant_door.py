"""Tenants on the Kafka door, without a broker: the tenant request topics' names and the one place they
are read back (``shared.kafka.topics``), the orchestrator's pattern subscription and its rule for a
request from a tenant's topic, and which topic the CLI writes as which Kafka user. The real broker's
side (its refusals, librdkafka reading the pattern) is in ``tests/e2e/test_secure_stack.py`` and
``tests/integration/test_orchestrator_tenant_topics.py``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.client import AoetlClient, TopicReadRefusedError
from aoetl.commands.config import CliConfig
from aoetl.commands.door import DoorAudit, stop_audited, submit_audited
from aoetl.devstack.kafka_security import BrokerSecurity
from services.orchestrator.configuration import OrchestratorSettings
from services.orchestrator.service import OrchestratorService
from shared.contracts import (
    AuditRecord,
    EventKind,
    PipelineRequest,
    PipelineResult,
    RequestAction,
    RunEvent,
    RunStatus,
)
from shared.kafka.acls import tenant_of_user, tenant_user
from shared.kafka.topics import (
    TOPICS,
    Topics,
    tenant_of_topic,
    tenant_request_topics,
    tenant_requests_pattern,
    tenant_requests_topic,
)
from shared.processing import LoopConfig
from shared.runtime import MessageContext, Output
from shared.settings import KafkaSettings, ServiceSettings
from shared.spec import parse_spec

pytestmark = pytest.mark.unit

SUFFIXES = ("", ".e2e1a2b3c4d", "-blue")


# ------------------------------------------------------------------------------ names of the topics
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("tenant", ["acme", "a", "globex-2", "x_y", "0" * 64])
def test_a_tenant_topic_is_read_back_into_its_tenant(tenant: str, suffix: str) -> None:
    topic = tenant_requests_topic(tenant, suffix)
    assert topic == f"aoetl.requests{suffix}.tenant.{tenant}"
    assert tenant_of_topic(topic, suffix) == tenant


@pytest.mark.parametrize(
    "topic",
    [
        "aoetl.requests",  # the shared topic: no tenant vouched for
        "aoetl.requests.tenant.",
        "aoetl.requests.tenant.Acme",
        "aoetl.requests.tenant.a.b",  # no dots: one tenant's topic is never another's prefix-sibling
        "aoetl.requests.tenant." + "x" * 65,
        "aoetl.requests.e2e1a2b3c4d.tenant.acme",  # another deployment's (suffix) topic
        "aoetl.requestsX.tenant.acme",
        "aoetl.events",
        "shop.orders",
    ],
)
def test_any_other_topic_has_no_tenant(topic: str) -> None:
    assert tenant_of_topic(topic) is None


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_the_subscription_pattern_matches_exactly_the_topics_that_name_a_tenant(suffix: str) -> None:
    pattern = tenant_requests_pattern(suffix)
    assert pattern.startswith("^") and pattern.endswith("$")  # librdkafka: "^" marks a regex
    candidates = [
        tenant_requests_topic("acme", suffix),
        tenant_requests_topic("0" * 64, suffix),
        f"aoetl.requests{suffix}.tenant.",
        f"aoetl.requests{suffix}.tenant.a.b",
        f"aoetl.requests{suffix}.tenant.Acme",
        f"aoetl.requests{suffix}.tenant." + "x" * 65,
        f"aoetl.requests{suffix}",
        f"aoetl.requests{suffix}Xtenant.acme",  # the dots are literal
        f"aoetl.requests{suffix}.tenant.acme.x",
        "aoetl.requests.other.tenant.acme",
        *(spec.name + suffix for spec in TOPICS),
    ]
    for topic in candidates:
        matched = re.match(pattern, topic) is not None
        assert matched == (tenant_of_topic(topic, suffix) is not None), topic


def test_a_suffix_that_cannot_be_part_of_a_topic_name_makes_no_pattern() -> None:
    with pytest.raises(ValueError, match="cannot be part of a Kafka topic name"):
        tenant_requests_pattern(".*")


def test_tenant_topics_are_laid_out_as_the_shared_requests_topic() -> None:
    """A run's request and its events must share a partition number (range assignment, same key)."""
    (shared,) = (spec for spec in TOPICS if spec.name == Topics.REQUESTS)
    specs = tenant_request_topics(["globex", "acme", "acme"], ".x")
    assert [s.name for s in specs] == ["aoetl.requests.x.tenant.acme", "aoetl.requests.x.tenant.globex"]
    assert all(s.partitions == shared.partitions and s.config == shared.config for s in specs)


def test_a_tenant_user_is_read_back_into_its_tenant() -> None:
    assert tenant_of_user(tenant_user("acme")) == "acme"
    for user in (None, "", "cli", "orchestrator", "tenant-", "tenant-Acme", "tenant-a.b", "xtenant-acme"):
        assert tenant_of_user(user) is None, user


def test_the_loop_decodes_a_topic_its_pattern_matches_with_the_patterns_contract() -> None:
    config = LoopConfig(
        service="orchestrator",
        stage=OrchestratorService.stage,
        instance_id="i",
        group_id="g",
        input_types={"aoetl.events": RunEvent, tenant_requests_pattern(): PipelineRequest},
    )
    assert config.contract_of("aoetl.events") is RunEvent
    assert config.contract_of(tenant_requests_topic("acme")) is PipelineRequest
    with pytest.raises(KeyError, match="not an input of orchestrator"):
        config.contract_of("aoetl.requests")


# ------------------------------------------------------------------------ the orchestrator's intake
@pytest.fixture
def orchestrator(tmp_path: Path) -> OrchestratorService:
    settings = OrchestratorSettings(topic_suffix=".t", tenant_topics_refresh_s=2.5)
    return OrchestratorService(settings)


def _spec(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "in.csv").write_text("id\n1\n")
    return {
        "name": "orders",
        "source": {"type": "csv", "path": str(tmp_path / "in.csv")},
        "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
    }


def _handle(service: OrchestratorService, request: PipelineRequest, topic: str) -> list[Output]:
    return list(service.handle(request, MessageContext(topic, 0, 0, None, None, [])))


def _result(outputs: list[Output]) -> PipelineResult | None:
    results = [o.value for o in outputs if isinstance(o.value, PipelineResult)]
    assert len(results) <= 1
    return results[0] if results else None


def test_the_orchestrator_subscribes_to_the_shared_topic_and_every_tenants(
    orchestrator: OrchestratorService,
) -> None:
    assert set(orchestrator.input_types()) == {
        "aoetl.requests.t",
        tenant_requests_pattern(".t"),
        "aoetl.events.t",
    }
    config = orchestrator.loop_config()
    # a new tenant's topic is joined at the next metadata refresh, not after librdkafka's 5 minutes
    assert config.consumer_overrides["topic.metadata.refresh.interval.ms"] == 2500
    assert config.transactional  # requests of every topic leave in the same transactions as before


def test_a_request_on_a_tenants_topic_runs_as_that_tenant(
    orchestrator: OrchestratorService, tmp_path: Path
) -> None:
    request = PipelineRequest(spec=parse_spec(_spec(tmp_path)), tenant="acme")
    outputs = _handle(orchestrator, request, tenant_requests_topic("acme", ".t"))
    assert _result(outputs) is None
    kinds = [o.value.kind for o in outputs if isinstance(o.value, RunEvent)]
    assert EventKind.RUN_ACCEPTED in kinds
    assert orchestrator.book.runs[request.run_id].tenant == "acme"


@pytest.mark.parametrize("claimed", ["globex", "default"])
def test_a_request_on_a_tenants_topic_claiming_another_tenant_is_rejected(
    orchestrator: OrchestratorService, tmp_path: Path, claimed: str
) -> None:
    request = PipelineRequest(spec=parse_spec(_spec(tmp_path)), tenant=claimed)
    result = _result(_handle(orchestrator, request, tenant_requests_topic("acme", ".t")))
    assert result is not None and result.status is RunStatus.REJECTED
    assert [(e.error_class, e.path, e.message) for e in result.errors] == [
        ("TenantMismatch", "tenant", f"request on tenant acme's topic claims tenant {claimed}")
    ]
    assert request.run_id not in orchestrator.book.runs
    assert result.tenant == "acme"  # the writer's, whom the broker vouches for, not the one it names


def test_the_shared_topic_keeps_the_tenant_its_trusted_writers_name(
    orchestrator: OrchestratorService, tmp_path: Path
) -> None:
    request = PipelineRequest(spec=parse_spec(_spec(tmp_path)), tenant="globex")
    assert _result(_handle(orchestrator, request, "aoetl.requests.t")) is None
    assert orchestrator.book.runs[request.run_id].tenant == "globex"


def test_a_tenant_stops_its_own_runs_only(orchestrator: OrchestratorService, tmp_path: Path) -> None:
    acme_topic, globex_topic = tenant_requests_topic("acme", ".t"), tenant_requests_topic("globex", ".t")
    run = PipelineRequest(spec=parse_spec(_spec(tmp_path)), tenant="acme")
    _handle(orchestrator, run, acme_topic)

    def stop(tenant: str, topic: str) -> list[Output]:
        request = PipelineRequest(run_id=run.run_id, action=RequestAction.STOP, tenant=tenant)
        return _handle(orchestrator, request, topic)

    assert stop("globex", globex_topic) == []  # another tenant's run
    assert stop("acme", globex_topic) == []  # a claim the topic contradicts
    assert run.run_id in orchestrator.book.runs
    result = _result(stop("acme", acme_topic))
    assert result is not None and result.status is RunStatus.CANCELLED


# ---------------------------------------------------------------------------------- the CLI's topic
class _Sent(list[tuple[str, str]]):
    """What the client produced: (topic, key), the value kept beside."""

    def __init__(self, client: AoetlClient) -> None:
        super().__init__()
        self.values: list[Any] = []
        client._produce = self._record  # type: ignore[method-assign]

    def _record(self, topic: str, key: str, value: Any) -> None:
        self.append((topic, key))
        self.values.append(value)


def _client(user: str | None, suffix: str = "") -> AoetlClient:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", sasl_username=user)
    return AoetlClient(ServiceSettings(kafka=kafka, topic_suffix=suffix))


@pytest.mark.parametrize("suffix", ["", ".s"])
def test_a_tenants_kafka_user_submits_and_stops_on_its_tenants_topic(suffix: str, tmp_path: Path) -> None:
    client = _client("tenant-acme", suffix)
    sent = _Sent(client)
    assert client.door_tenant == "acme"
    config = CliConfig(tenant="default")  # e.g. what `aoetl dev up` wrote: the broker's word wins
    audit = DoorAudit(client, config)
    assert audit.tenant == "acme"
    request = client.submit(parse_spec(_spec(tmp_path)), tenant=audit.tenant)
    client.stop(request.run_id, tenant=audit.tenant)
    topic = f"aoetl.requests{suffix}.tenant.acme"
    assert sent == [(topic, request.run_id), (topic, request.run_id)]
    assert [v.tenant for v in sent.values] == ["acme", "acme"]


@pytest.mark.parametrize("user", [None, "cli"])
def test_any_other_user_writes_the_shared_topic_as_the_configured_tenant(
    user: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(user)
    sent = _Sent(client)
    assert client.door_tenant is None
    monkeypatch.setattr("aoetl.commands.door.load_config", lambda: CliConfig(tenant="globex"))
    request = submit_audited(client, parse_spec(_spec(tmp_path)))
    stop_audited(client, request.run_id)
    assert [topic for topic, _ in sent] == ["aoetl.audit", "aoetl.requests", "aoetl.audit", "aoetl.requests"]
    assert [v.tenant for v in sent.values if isinstance(v, PipelineRequest | AuditRecord)] == ["globex"] * 4


# ------------------------------------------------------------------------------------ the dev stack
def test_the_stack_remembers_its_tenants_users_with_private_passwords(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path)
    assert security.add_tenants(["globex"]) == ["globex"]
    first = security.password("tenant-globex")
    assert security.add_tenants(["acme", "globex"]) == ["acme", "globex"]
    assert security.password("tenant-globex") == first  # kept: the broker holds it
    assert security.password("tenant-acme") != first
    assert security.credentials_file.stat().st_mode & 0o077 == 0
    assert tenant_of_user(security.client_env("tenant-acme")["AOETL_KAFKA_SASL_USERNAME"]) == "acme"


def test_dev_up_refuses_a_tenant_name_that_cannot_name_a_topic_before_starting_anything(
    tmp_path: Path,
) -> None:
    env = {"AOETL_STATE_DIR": str(tmp_path / "state")}
    refused = CliRunner().invoke(app, ["dev", "up", "--tenant", "acme", "--tenant", "Bad.Name"], env=env)
    assert refused.exit_code == 2
    assert "tenant 'Bad.Name' cannot name a Kafka topic" in refused.output
    assert not (tmp_path / "state").exists()


def test_aoetl_stop_no_wait_as_a_tenant_only_asks_on_its_tenants_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(AoetlClient, "_produce", lambda self, topic, key, value: sent.append((topic, value)))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "AOETL_KAFKA_SASL_USERNAME": "tenant-acme",
        "AOETL_CONFIG": str(tmp_path / "none.toml"),
    }
    stopped = CliRunner().invoke(app, ["stop", "--no-wait", "run-1"], env=env)
    assert stopped.exit_code == 0, stopped.output
    assert "stop of run run-1 requested" in stopped.output
    assert [topic for topic, _ in sent] == ["aoetl.audit", "aoetl.requests.tenant.acme"]
    assert sent[1][1].action is RequestAction.STOP and sent[1][1].tenant == "acme"


def test_a_tenants_user_is_told_it_reads_nothing_before_the_broker_is_asked() -> None:
    with pytest.raises(TopicReadRefusedError, match="tenant acme's Kafka user submits requests only"):
        _client("tenant-acme").reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False)
