"""The ACL table (shared.kafka.acls), evaluated with the broker's rules: each principal may do exactly what
its row says, nothing the wildcard grants reaches a system topic, and the rows match what the services'
code actually consumes, joins and names. (The secure end-to-end suite checks the same list on the real
broker: its authorizer refuses nothing the services do.)

The evaluator below follows StandardAuthorizer: a matching DENY wins over any ALLOW; LITERAL matches the
name (or ``*``, every name), PREFIXED the names that start with it; READ and WRITE imply DESCRIBE; nothing
that no ACL allows is allowed."""

from __future__ import annotations

import pytest

from services.extract.configuration import ExtractSettings
from services.extract.service import ExtractService
from services.extract.streams import stream_group
from services.load.configuration import LoadSettings
from services.load.service import LoadService
from services.monitor.configuration import DEFAULT_LAG_GROUPS, MonitorSettings
from services.orchestrator.configuration import OrchestratorSettings
from services.orchestrator.service import OrchestratorService
from services.orchestrator.topic_triggers import RuleKey
from services.transform.configuration import TransformSettings
from services.transform.service import TransformService
from shared.kafka.acls import (
    PRINCIPAL_ACCESS,
    TOPIC_ACCESS,
    Grant,
    Operation,
    Pattern,
    Permission,
    Principal,
    Resource,
    grants,
    tenant_grants,
    tenant_requests_topic,
    tenant_user,
)
from shared.kafka.topics import TOPICS, Topics, tenant_requests_pattern
from shared.kafka.transaction import transactional_id
from shared.settings import load_settings

pytestmark = pytest.mark.unit

SUFFIXES = ("", ".e2e1a2b3c4d")
EXTERNAL = "shop.orders"  # a topic outside the system: a stream's source, a trigger's topic, a destination
# what an ALLOW of each operation also allows (StandardAuthorizer: READ and WRITE imply DESCRIBE)
_ALLOWED_BY = {Operation.DESCRIBE: {Operation.READ, Operation.WRITE, Operation.DESCRIBE}}


def _matches(grant: Grant, resource: Resource, name: str) -> bool:
    if grant.resource is not resource:
        return False
    if grant.pattern is Pattern.PREFIXED:
        return name.startswith(grant.name)
    return grant.name in ("*", name)


def allowed(
    acls: list[Grant], principal: Principal | str, operation: Operation, resource: Resource, name: str
) -> bool:
    """``principal``: a role, or a user (``User:<name>``) outside the roles, such as a tenant's."""
    user = principal.user if isinstance(principal, Principal) else principal
    matching = [g for g in acls if g.principal == user and _matches(g, resource, name)]
    if any(g.permission is Permission.DENY and g.operation is operation for g in matching):
        return False  # a matching DENY wins, whatever allows it
    implied_by = _ALLOWED_BY.get(operation, {operation})
    return any(g.permission is Permission.ALLOW and g.operation in implied_by for g in matching)


@pytest.fixture(params=SUFFIXES, ids=["no-suffix", "suffix"])
def suffix(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_system_topic_has_exactly_one_row() -> None:
    assert set(TOPIC_ACCESS) == {spec.name for spec in TOPICS}
    assert set(PRINCIPAL_ACCESS) == set(Principal)


@pytest.mark.parametrize("principal", list(Principal))
def test_each_principal_reads_and_writes_exactly_its_system_topics(principal: Principal, suffix: str) -> None:
    acls = grants(suffix)
    for topic, access in TOPIC_ACCESS.items():
        name = topic + suffix
        can_read = allowed(acls, principal, Operation.READ, Resource.TOPIC, name)
        can_write = allowed(acls, principal, Operation.WRITE, Resource.TOPIC, name)
        assert can_read == (principal in access.consumers), f"{principal} READ {name}"
        assert can_write == (principal in access.producers), f"{principal} WRITE {name}"
        assert not allowed(acls, principal, Operation.CREATE, Resource.TOPIC, name)


@pytest.mark.parametrize("principal", list(Principal))
def test_topics_outside_the_system_only_for_the_roles_that_move_user_data(
    principal: Principal, suffix: str
) -> None:
    acls = grants(suffix)
    access = PRINCIPAL_ACCESS[principal]
    assert allowed(acls, principal, Operation.READ, Resource.TOPIC, EXTERNAL) == access.reads_external
    assert allowed(acls, principal, Operation.WRITE, Resource.TOPIC, EXTERNAL) == access.writes_external
    # Kafka's own topics are never reached through the wildcard
    for internal in ("__consumer_offsets", "__transaction_state"):
        for operation in (Operation.READ, Operation.WRITE):
            assert not allowed(acls, principal, operation, Resource.TOPIC, internal)


@pytest.mark.parametrize("principal", [Principal.LOAD, Principal.EXTRACT, Principal.ORCHESTRATOR])
def test_the_wildcard_never_reaches_another_deployments_system_topics(principal: Principal) -> None:
    acls = grants("")
    for topic, access in TOPIC_ACCESS.items():
        other = topic + ".another-deployment"
        if principal not in access.producers:
            assert not allowed(acls, principal, Operation.WRITE, Resource.TOPIC, other), other
        if principal not in access.consumers:
            assert not allowed(acls, principal, Operation.READ, Resource.TOPIC, other), other


def test_only_the_monitor_creates_and_uses_its_own_topics(suffix: str) -> None:
    acls = grants(suffix)
    own = f"aoetl-monitor{suffix}-runs-changelog"
    for principal in Principal:
        is_monitor = principal is Principal.MONITOR
        for operation in (Operation.CREATE, Operation.READ, Operation.WRITE):
            assert allowed(acls, principal, operation, Resource.TOPIC, own) == is_monitor, (
                principal,
                operation,
            )


def test_the_monitor_describes_the_groups_it_watches_and_their_topics_without_joining_them(
    suffix: str,
) -> None:
    acls = grants(suffix)
    for group in DEFAULT_LAG_GROUPS:
        assert allowed(acls, Principal.MONITOR, Operation.DESCRIBE, Resource.GROUP, group + suffix)
        assert not allowed(acls, Principal.MONITOR, Operation.READ, Resource.GROUP, group + suffix)
    for watched in PRINCIPAL_ACCESS[Principal.MONITOR].watches:
        for topic, access in TOPIC_ACCESS.items():
            if watched in access.consumers:
                assert allowed(acls, Principal.MONITOR, Operation.DESCRIBE, Resource.TOPIC, topic + suffix)


def test_transform_may_not_write_results_nor_load_through_its_wildcard() -> None:
    """The two refusals the secure end-to-end suite provokes on the real broker."""
    acls = grants("")
    assert not allowed(acls, Principal.TRANSFORM, Operation.WRITE, Resource.TOPIC, "aoetl.results")
    assert not allowed(acls, Principal.LOAD, Operation.WRITE, Resource.TOPIC, "aoetl.results")
    assert allowed(acls, Principal.LOAD, Operation.WRITE, Resource.TOPIC, EXTERNAL)


# ------------------------------------------------------------------------ against the services' code
SERVICE_CLASSES = {
    Principal.EXTRACT: ExtractService,
    Principal.TRANSFORM: TransformService,
    Principal.LOAD: LoadService,
    Principal.ORCHESTRATOR: OrchestratorService,
}


@pytest.mark.parametrize("principal", list(SERVICE_CLASSES))
def test_each_consuming_service_may_read_its_input_topics_and_join_its_group(
    principal: Principal, suffix: str
) -> None:
    cls = SERVICE_CLASSES[principal]
    settings = load_settings(cls.settings_class, topic_suffix=suffix)
    service = cls(settings)  # type: ignore[arg-type]
    acls = grants(suffix) + tenant_grants(["acme"], suffix)
    for topic in map(lambda t: _an_input_topic(t, suffix), service.input_types()):
        assert allowed(acls, principal, Operation.READ, Resource.TOPIC, topic), topic
    assert allowed(acls, principal, Operation.READ, Resource.GROUP, settings.group_id + suffix)
    for other in set(SERVICE_CLASSES) - {principal}:
        assert not allowed(acls, other, Operation.READ, Resource.GROUP, settings.group_id + suffix)


@pytest.mark.parametrize("principal", list(SERVICE_CLASSES))
def test_the_cli_may_replay_a_dead_letter_into_every_stage_input(principal: Principal, suffix: str) -> None:
    """`aoetl dlq replay` re-publishes a dead letter into the topic it failed on (its origin), except into
    a tenant's own request topic: only that tenant writes it, not even the operator."""
    cls = SERVICE_CLASSES[principal]
    service = cls(load_settings(cls.settings_class, topic_suffix=suffix))  # type: ignore[arg-type]
    acls = grants(suffix) + tenant_grants(["acme"], suffix)
    for topic in map(lambda t: _an_input_topic(t, suffix), service.input_types()):
        is_tenants = topic == tenant_requests_topic("acme", suffix)
        assert allowed(acls, Principal.CLI, Operation.WRITE, Resource.TOPIC, topic) != is_tenants, topic


def _an_input_topic(name_or_pattern: str, suffix: str) -> str:
    """An input topic's name; for a pattern subscription (``^...``), a topic it matches: the only one is
    the tenants' request topics' (then tenant acme's)."""
    if not name_or_pattern.startswith("^"):
        return name_or_pattern
    assert name_or_pattern == tenant_requests_pattern(suffix)
    return tenant_requests_topic("acme", suffix)


@pytest.mark.parametrize(
    ("settings_class", "principal"),
    [
        (ExtractSettings, Principal.EXTRACT),
        (TransformSettings, Principal.TRANSFORM),
        (LoadSettings, Principal.LOAD),
        (OrchestratorSettings, Principal.ORCHESTRATOR),
        (MonitorSettings, Principal.MONITOR),
    ],
)
def test_the_default_group_of_each_service_is_its_rows_group(
    settings_class: type, principal: Principal
) -> None:
    assert settings_class.model_fields["group_id"].default in PRINCIPAL_ACCESS[principal].groups


def test_groups_named_at_run_time_belong_to_their_service(suffix: str) -> None:
    acls = grants(suffix)
    runtime_groups = {
        Principal.EXTRACT: stream_group("clicks", suffix),
        Principal.ORCHESTRATOR: RuleKey("on-order", 0).group_id(suffix),
    }
    for owner, group in runtime_groups.items():
        for principal in Principal:
            assert allowed(acls, principal, Operation.READ, Resource.GROUP, group) == (principal is owner), (
                group
            )


def test_transactional_ids_belong_to_their_service() -> None:
    acls = grants("")
    ids = {
        # the task loop's (shared.processing.loop), a stream's (services.extract.streams) and a topic
        # trigger's (services.orchestrator.topic_triggers), built as the code builds them
        Principal.EXTRACT: [
            transactional_id("extract", "extract-0"),
            transactional_id("extract-stream", "x", "p"),
        ],
        Principal.TRANSFORM: [transactional_id("transform", "transform-1")],
        Principal.ORCHESTRATOR: [
            transactional_id("orchestrator", "orchestrator-0"),
            transactional_id("orchestrator-trigger", "orchestrator-0", "on-order", "0"),
        ],
    }
    for owner, names in ids.items():
        for name in names:
            for principal in Principal:
                may = allowed(acls, principal, Operation.WRITE, Resource.TRANSACTIONAL_ID, name)
                assert may == (principal is owner), (principal, name)
    # the monitor's alerts: one transactional id per app (services.monitor.app), suffixed like its app id
    for suffix in SUFFIXES:
        monitor_id = MonitorSettings(topic_suffix=suffix).app_id + "-alerts"
        for principal in Principal:
            may = allowed(grants(suffix), principal, Operation.WRITE, Resource.TRANSACTIONAL_ID, monitor_id)
            assert may == (principal is Principal.MONITOR), (principal, monitor_id)
    # load is not transactional (at-least-once into an idempotent sink): it gets no transactional id
    assert LoadService.transactional is False
    assert PRINCIPAL_ACCESS[Principal.LOAD].transactional_id_prefix is None


def test_grants_render_to_broker_acl_bindings() -> None:
    from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    bindings = [g.to_binding() for g in grants("")]
    assert len(bindings) == len(set(map(str, grants(""))))
    deny = next(b for b in bindings if b.permission_type is AclPermissionType.DENY)
    assert deny.restype is ResourceType.TOPIC and deny.resource_pattern_type is ResourcePatternType.PREFIXED
    assert {b.operation for b in bindings} <= {
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.CREATE,
        AclOperation.DESCRIBE,
    }


# ------------------------------------------------------------------------ tenants on the Kafka door
def test_a_tenant_submits_only_on_its_own_request_topic_and_only_the_orchestrator_and_monitor_read_them(
    suffix: str,
) -> None:
    acls = grants(suffix) + tenant_grants(["acme", "globex"], suffix)
    acme, globex = tenant_requests_topic("acme", suffix), tenant_requests_topic("globex", suffix)
    acme_user = f"User:{tenant_user('acme')}"
    assert allowed(acls, acme_user, Operation.WRITE, Resource.TOPIC, acme)
    for other in (globex, Topics.REQUESTS + suffix, Topics.RESULTS + suffix, EXTERNAL):
        assert not allowed(acls, acme_user, Operation.WRITE, Resource.TOPIC, other), other
    for topic in (acme, globex, Topics.RESULTS + suffix):
        assert not allowed(acls, acme_user, Operation.READ, Resource.TOPIC, topic), topic
    # the monitor reports the orchestrator's group lag, which includes them
    assert allowed(acls, Principal.MONITOR, Operation.DESCRIBE, Resource.TOPIC, acme)
    assert not allowed(grants(suffix), Principal.MONITOR, Operation.DESCRIBE, Resource.TOPIC, acme)
    for principal in Principal:
        for topic in (acme, globex):
            may_read = allowed(acls, principal, Operation.READ, Resource.TOPIC, topic)
            # the orchestrator runs them; the monitor's lineage reads a run's inline spec back (issue 12)
            readers = (Principal.ORCHESTRATOR, Principal.MONITOR)
            assert may_read == (principal in readers), (principal, topic)
            # not even the roles with the wildcard write reach them (aoetl.requests is reserved)
            assert not allowed(acls, principal, Operation.WRITE, Resource.TOPIC, topic), (principal, topic)


@pytest.mark.parametrize("tenant", ["", "a.b", "*", "Acme", "x" * 65, "../etc", "a b"])
def test_a_tenant_name_that_cannot_be_one_topic_name_is_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="cannot name a Kafka topic"):
        tenant_requests_topic(tenant)
    with pytest.raises(ValueError):
        tenant_grants([tenant])
