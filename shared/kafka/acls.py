"""Least-privilege Kafka ACLs for every principal of the system, derived from one table.

Each service (and the developer's CLI) authenticates as its own principal (``User:<name>``). What a
principal may do is written down once, here: ``TOPIC_ACCESS`` says who produces and who consumes each
system topic of ``shared.kafka.topics``, ``PRINCIPAL_ACCESS`` what else each role needs (its consumer
groups, its transactional ids, topics outside the system for the roles that move user data, the
monitor's own topics and the groups it watches). ``grants(suffix)`` turns the table into the ACL list a
broker with ``StandardAuthorizer`` enforces; nothing else is allowed (no ``allow.everyone.if.no.acl``).

How the resources are named, and why:

* system topics and the fixed consumer groups are LITERAL names plus the deployment's topic suffix: one
  deployment's principals see nothing of another's on a shared broker;
* groups and transactional ids a service names at run time (one per continuous pipeline, per topic
  trigger, per instance) are PREFIXED by the name the code builds them from;
* topics outside the system (a continuous pipeline's source, a topic trigger's topic, a Kafka
  destination) are not known in advance, so those roles get the wildcard topic for that one operation
  together with a DENY of it on every system topic (all suffixes), the monitor's topics and Kafka's own
  (``__``), so the wildcard never reaches the system's topics. DENY wins over ALLOW in Kafka, which is
  why the system topics such a role *does* need must not be prefixes of one it is denied (a unit test
  evaluates the whole list with the broker's rules to prove each principal gets exactly its row).

Nothing creates topics but the operator (the dev stack's admin, a deployment's init job), except the
monitor's faust app, which creates its own changelog topics under its app id.

Tenants on the Kafka door (``tenant_grants``): a tenant's own principal (``User:tenant-<name>``) may write
its request topic ``aoetl.requests<suffix>.tenant.<name>`` (LITERAL, named in ``shared.kafka.topics``) and
the audit topic (its CLI's records), and nothing else: it reads nothing, not even results, which hold
every tenant's runs. The orchestrator reads every tenant's request topic (PREFIXED). The broker thus
decides who submitted a request: the orchestrator takes the tenant from the topic a request arrived on
(``shared.kafka.topics.tenant_of_topic``), and refuses a request whose own ``tenant`` says otherwise.
The wildcard grants above never reach these topics (``aoetl.requests`` is a reserved prefix).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from shared.kafka.topics import TOPICS, Topics, checked_tenant
from shared.kafka.topics import tenant_requests_prefix as tenant_requests_prefix  # re-exported: used
from shared.kafka.topics import tenant_requests_topic as tenant_requests_topic  # with the tenants' ACLs

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding


class Principal(StrEnum):
    """The SCRAM user names; the broker sees ``User:<value>``."""

    GATEWAY = "gateway"
    ORCHESTRATOR = "orchestrator"
    EXTRACT = "extract"
    TRANSFORM = "transform"
    LOAD = "load"
    MONITOR = "monitor"
    CLI = "cli"  # the developer's `aoetl` commands and the end-to-end tests' client

    @property
    def user(self) -> str:
        return f"User:{self.value}"


# short names, so the table below reads as one line per topic
GW, ORCH, EXT, TRF, LOAD, MON, CLI = (
    Principal.GATEWAY,
    Principal.ORCHESTRATOR,
    Principal.EXTRACT,
    Principal.TRANSFORM,
    Principal.LOAD,
    Principal.MONITOR,
    Principal.CLI,
)
SERVICES: Final = (GW, ORCH, EXT, TRF, LOAD, MON)


@dataclass(frozen=True)
class TopicAccess:
    producers: frozenset[Principal]
    consumers: frozenset[Principal]


def _access(producers: Iterable[Principal], consumers: Iterable[Principal]) -> TopicAccess:
    return TopicAccess(frozenset(producers), frozenset(consumers))


# Who produces and who consumes each system topic (a new topic in shared.kafka.topics needs its row here;
# a unit test fails until it has one).
# The CLI is the operator's tool: `aoetl dlq replay` re-publishes a dead letter into the topic it failed
# on, so it writes every input topic of a consume-process-produce stage (a unit test holds it to that);
# the gateway writes the stage inputs after requests for the same reason: the web console's replay button
# (services.gateway.redrive) re-drives a tenant's dead letters there.
TOPIC_ACCESS: Final[Mapping[str, TopicAccess]] = {
    # submitted by the gateway and the CLI, re-submitted by the orchestrator's topic triggers; the
    # gateway follows it to answer GET /runs before the orchestrator has seen a run; the monitor reads a
    # run's request back for its lineage when RUN_ACCEPTED does not carry the spec (services.monitor.lineage)
    Topics.REQUESTS: _access({GW, ORCH, CLI}, {ORCH, GW, MON}),
    Topics.DEFINITIONS: _access({GW, CLI}, {ORCH, GW, CLI}),
    Topics.TASKS: _access({ORCH, CLI, GW}, {EXT}),
    Topics.DATA_EXTRACTED: _access({EXT, CLI, GW}, {TRF}),
    # extract too when it chains the transform stage to its reads (services.extract.handoff)
    Topics.DATA_TRANSFORMED: _access({TRF, EXT, CLI, GW}, {LOAD}),
    Topics.EVENTS: _access({ORCH, EXT, TRF, LOAD, CLI}, {ORCH, MON, GW, CLI}),
    Topics.RESULTS: _access({ORCH}, {GW, MON, CLI}),
    # the monitor reads it back before each alert: the topic decides what was sent (services.monitor.alerts);
    # the gateway follows it for GET /alerts; the CLI replays an exhausted delivery's dead letter there, for
    # its endpoint only (services.monitor.routing.dead_letters)
    Topics.ALERTS: _access({MON, CLI}, {MON, GW, CLI}),
    # every consume-process-produce stage dead-letters what it cannot handle, and the monitor's alert
    # router an alert whose delivery exhausted its retries (services.monitor.routing.dead_letters); the
    # gateway follows it for GET /dead-letters
    Topics.DEAD_LETTERS: _access({ORCH, EXT, TRF, LOAD, MON}, {MON, GW, CLI}),
    Topics.CONTROL: _access({ORCH, CLI}, {LOAD}),
    Topics.WATERMARKS: _access({ORCH}, {ORCH}),
    # every service publishes the writer schemas at start-up (and load the row schemas of a Kafka
    # destination); everything that decodes resolves unknown writers from it
    Topics.SCHEMAS: _access(SERVICES, (*SERVICES, CLI)),
    Topics.STREAMS: _access({ORCH}, {ORCH, EXT}),
    # the last tick each schedule fired, written with the tick's request; only the orchestrator reads it
    Topics.SCHEDULES: _access({ORCH}, {ORCH}),
    # the gateway's replay memory of webhook deliveries: every replica claims a delivery there and reads
    # the claims back (services.gateway.deliveries); nothing else touches it
    Topics.DELIVERIES: _access({GW}, {GW}),
    # the key ring (hashed keys, compacted): keys are made and revoked through the gateway's /auth/keys and
    # by `aoetl auth keys` on the Kafka door; every gateway replica follows it, the CLI reads it to list and
    # revoke (shared.auth.keys.read_keys)
    Topics.API_KEYS: _access({GW, CLI}, {GW, CLI}),
    # one record per mutating call, from both doors; no service or command reads it back (an auditor's
    # tooling reads it as the operator)
    Topics.AUDIT: _access({GW, CLI}, set()),
    # the run history (compacted, key run id): the monitor folds run events into one summary per run
    # (services.monitor.history); `aoetl runs list` and `aoetl status` read it, and so may the gateway
    Topics.RUNS: _access({MON}, {GW, CLI}),
    # the stages' backlog (compacted, key group): the monitor writes what it measured of the services'
    # groups (services.monitor.lag), the gateway follows it for the console
    Topics.LAG: _access({MON}, {GW, CLI}),
}

# Group-less readers (assign, never commit) still need a group id for librdkafka; it is random, with one
# of these prefixes (shared.avro.schema_topic, shared.kafka.compacted, services.orchestrator.replay,
# aoetl.client, aoetl.commands.definitions). Whoever reads a topic may use them.
READER_GROUP_PREFIXES: Final = (
    "aoetl-schema-resolver-",
    "aoetl-view-",
    "aoetl-probe-",
    "aoetl-replay-",
    "aoetl-watch-",
    "aoetl-cli-",
)
MONITOR_TOPIC_PREFIX: Final = "aoetl-monitor"  # the faust app id: its changelog and internal topics


@dataclass(frozen=True)
class PrincipalAccess:
    """What a role needs beside the system topics of ``TOPIC_ACCESS``."""

    groups: tuple[str, ...] = ()  # consumer groups it joins (the topic suffix is appended)
    group_prefixes: tuple[str, ...] = ()  # groups it names at run time: one per pipeline, per trigger
    transactional_id_prefix: str | None = None  # shared.kafka.transaction.transactional_id(service, ...)
    reads_external: bool = False  # topics outside the system: continuous sources, trigger topics
    writes_external: bool = False  # Kafka destinations
    owns_topic_prefix: str | None = None  # topics it creates itself (faust changelogs)
    # whose consumer groups' lag it reads: DESCRIBE on those groups and on the topics they consume (the
    # broker silently leaves out of a group's committed offsets every topic the caller cannot describe)
    watches: tuple[Principal, ...] = ()


PRINCIPAL_ACCESS: Final[Mapping[Principal, PrincipalAccess]] = {
    GW: PrincipalAccess(),  # group-less reader, plain idempotent producer
    ORCH: PrincipalAccess(
        groups=("aoetl-orchestrator",),
        group_prefixes=("aoetl-trigger.",),  # services.orchestrator.topic_triggers.RuleKey.group_id
        transactional_id_prefix="orchestrator-",
        reads_external=True,
    ),
    EXT: PrincipalAccess(
        groups=("aoetl-extract",),
        group_prefixes=("aoetl-stream.",),  # services.extract.streams.stream_group
        transactional_id_prefix="extract-",
        reads_external=True,
    ),
    TRF: PrincipalAccess(groups=("aoetl-transform",), transactional_id_prefix="transform-"),
    LOAD: PrincipalAccess(groups=("aoetl-load",), writes_external=True),  # not transactional
    MON: PrincipalAccess(
        groups=(MONITOR_TOPIC_PREFIX,),
        group_prefixes=("aoetl-alert-route.",),  # services.monitor.routing.router.route_group
        owns_topic_prefix=MONITOR_TOPIC_PREFIX,
        watches=(ORCH, EXT, TRF, LOAD),
    ),
    CLI: PrincipalAccess(),
}

# Topic names no wildcard grant may reach: the system's (every suffix), the monitor's, Kafka's own.
RESERVED_TOPIC_PREFIXES: Final = (*(spec.name for spec in TOPICS), MONITOR_TOPIC_PREFIX, "__")


class Resource(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"


class Pattern(StrEnum):
    LITERAL = "LITERAL"  # the name "*" is the wildcard: every resource of the type
    PREFIXED = "PREFIXED"


class Operation(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"


class Permission(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: ``principal`` may (or may not) do ``operation`` on the resources the pattern names, from
    any host (the broker listens on authenticated TLS only; the host adds nothing a password does not)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation
    permission: Permission = Permission.ALLOW
    host: str = field(default="*", compare=False)

    def __str__(self) -> str:
        return (
            f"{self.permission} {self.principal} {self.operation} {self.resource}:{self.pattern}:{self.name}"
        )

    def to_binding(self) -> AclBinding:
        """The confluent-kafka admin object (``AdminClient.create_acls``)."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        return AclBinding(
            ResourceType[self.resource.value],
            self.name,
            ResourcePatternType[self.pattern.value],
            self.principal,
            self.host,
            AclOperation[self.operation.value],
            AclPermissionType[self.permission.value],
        )


def topics_of(principal: Principal, operation: Operation) -> list[str]:
    """The system topics (logical names) ``principal`` reads (READ) or writes (WRITE)."""
    if operation is Operation.READ:
        return sorted(t for t, access in TOPIC_ACCESS.items() if principal in access.consumers)
    if operation is Operation.WRITE:
        return sorted(t for t, access in TOPIC_ACCESS.items() if principal in access.producers)
    raise ValueError(f"topics are read or written, not {operation}")


def grants(suffix: str = "", principals: Iterable[Principal] = tuple(Principal)) -> list[Grant]:
    """Every ACL of ``principals`` for the deployment whose topics and groups carry ``suffix``."""
    result: set[Grant] = set()
    for principal in principals:
        result.update(_grants_of(principal, suffix))
    return sorted(result)


def _grants_of(principal: Principal, suffix: str) -> Iterable[Grant]:
    access = PRINCIPAL_ACCESS[principal]
    user = principal.user
    reads, writes = topics_of(principal, Operation.READ), topics_of(principal, Operation.WRITE)
    for topic in reads:
        yield Grant(user, Resource.TOPIC, topic + suffix, Pattern.LITERAL, Operation.READ)
    for topic in writes:
        yield Grant(user, Resource.TOPIC, topic + suffix, Pattern.LITERAL, Operation.WRITE)
    if reads:
        for prefix in READER_GROUP_PREFIXES:
            yield Grant(user, Resource.GROUP, prefix, Pattern.PREFIXED, Operation.READ)
    for group in access.groups:
        yield Grant(user, Resource.GROUP, group + suffix, Pattern.LITERAL, Operation.READ)
    for prefix in access.group_prefixes:
        yield Grant(user, Resource.GROUP, prefix, Pattern.PREFIXED, Operation.READ)
    if access.transactional_id_prefix:
        name = access.transactional_id_prefix
        yield Grant(user, Resource.TRANSACTIONAL_ID, name, Pattern.PREFIXED, Operation.WRITE)
    for operation, external in (
        (Operation.READ, access.reads_external),
        (Operation.WRITE, access.writes_external),
    ):
        if external:
            yield from _external(user, operation, set(reads if operation is Operation.READ else writes))
    if access.owns_topic_prefix:
        own = access.owns_topic_prefix + suffix + "-"
        for operation in (Operation.CREATE, Operation.READ, Operation.WRITE):
            yield Grant(user, Resource.TOPIC, own, Pattern.PREFIXED, operation)
        # its app id also names its transactional ids: its alerts' (<app id>-alerts, services.monitor.app)
        # and its run summaries' (<app id>-runs-<partition>, services.monitor.history)
        yield Grant(user, Resource.TRANSACTIONAL_ID, own, Pattern.PREFIXED, Operation.WRITE)
    for watched in access.watches:
        for group in PRINCIPAL_ACCESS[watched].groups:
            yield Grant(user, Resource.GROUP, group + suffix, Pattern.LITERAL, Operation.DESCRIBE)
        for topic in topics_of(watched, Operation.READ):
            yield Grant(user, Resource.TOPIC, topic + suffix, Pattern.LITERAL, Operation.DESCRIBE)


def _external(user: str, operation: Operation, system_topics_allowed: set[str]) -> Iterable[Grant]:
    """``operation`` on every topic outside the system: the wildcard, denied on the reserved names."""
    yield Grant(user, Resource.TOPIC, "*", Pattern.LITERAL, operation)
    for prefix in RESERVED_TOPIC_PREFIXES:
        if prefix not in system_topics_allowed:
            yield Grant(user, Resource.TOPIC, prefix, Pattern.PREFIXED, operation, Permission.DENY)


def principal_of(service: str) -> Principal:
    """The principal a service process authenticates as (its ``AOETL_SERVICE_NAME``)."""
    return Principal(service)


TENANT_USER_PREFIX: Final = "tenant-"


def tenant_user(tenant: str) -> str:
    """The SCRAM user a tenant's own Kafka producer authenticates as."""
    return TENANT_USER_PREFIX + checked_tenant(tenant)


def tenant_of_user(user: str | None) -> str | None:
    """The tenant whose own Kafka user ``user`` is (``tenant-<name>``), None for any other user."""
    if not user or not user.startswith(TENANT_USER_PREFIX):
        return None
    tenant = user.removeprefix(TENANT_USER_PREFIX)
    try:
        return checked_tenant(tenant)
    except ValueError:
        return None


# Who reads the tenants' request topics: the orchestrator runs them, the monitor's lineage reads a run's
# request back (as it reads the shared requests topic: TOPIC_ACCESS).
TENANT_REQUEST_READERS: Final = (ORCH, MON)


def tenant_grants(tenants: Iterable[str], suffix: str = "") -> list[Grant]:
    """The Kafka door's tenants' ACLs: each writes its request topic (and the audit record the CLI writes
    before each request, ``aoetl.commands.door``), the orchestrator reads them all, and so does the
    monitor: a run's inline spec is on its request only, which the lineage reads back
    (``services.monitor.lineage.requests``; without it a tenant's run had no datasets); whoever reports
    the orchestrator group's lag describes them."""
    result: set[Grant] = set()
    for tenant in tenants:
        user = f"User:{tenant_user(tenant)}"
        for topic in (tenant_requests_topic(tenant, suffix), Topics.AUDIT + suffix):
            result.add(Grant(user, Resource.TOPIC, topic, Pattern.LITERAL, Operation.WRITE))
    if result:
        prefix = tenant_requests_prefix(suffix)
        for reader in TENANT_REQUEST_READERS:
            result.add(Grant(reader.user, Resource.TOPIC, prefix, Pattern.PREFIXED, Operation.READ))
        # the orchestrator's group consumes them: whoever reads that group's lag describes them too
        for watcher, access in PRINCIPAL_ACCESS.items():
            if ORCH in access.watches:
                result.add(Grant(watcher.user, Resource.TOPIC, prefix, Pattern.PREFIXED, Operation.DESCRIBE))
    return sorted(result)
