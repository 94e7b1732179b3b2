"""The one declarative list of topics. The dev stack, the test fixtures, compose and k8s all create topics
from here, so partitions, retention and compaction are decided once.

Besides the system topics (``TOPICS``), each tenant of the Kafka door has its own request topic,
``aoetl.requests<suffix>.tenant.<name>``, which only that tenant's Kafka user may write (the ACLs of
``shared.kafka.acls``): the topic a request arrived on is the broker's word for who sent it. Its name is
built and parsed here only (``tenant_requests_topic``, ``tenant_of_topic``, and the orchestrator's
subscription pattern ``tenant_requests_pattern``), and its layout copies the shared requests topic's
(``tenant_request_topics``): the orchestrator relies on a run's request and its events sharing a partition
number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final

DAY_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""


class Topics:
    """Topic names. Services import these constants; nobody spells a topic name by hand."""

    REQUESTS: Final = "aoetl.requests"
    DEFINITIONS: Final = "aoetl.definitions"
    TASKS: Final = "aoetl.tasks"
    DATA_EXTRACTED: Final = "aoetl.data.extracted"
    DATA_TRANSFORMED: Final = "aoetl.data.transformed"
    EVENTS: Final = "aoetl.events"
    RESULTS: Final = "aoetl.results"
    ALERTS: Final = "aoetl.alerts"
    DEAD_LETTERS: Final = "aoetl.deadletters"
    CONTROL: Final = "aoetl.control"
    WATERMARKS: Final = "aoetl.watermarks"
    SCHEMAS: Final = "aoetl.schemas"
    STREAMS: Final = "aoetl.streams"
    SCHEDULES: Final = "aoetl.schedules"
    DELIVERIES: Final = "aoetl.deliveries"
    API_KEYS: Final = "aoetl.auth.keys"
    AUDIT: Final = "aoetl.audit"
    RUNS: Final = "aoetl.runs"
    LAG: Final = "aoetl.lag"


# Data topics carry Arrow IPC batches of up to a few MiB inside an Avro envelope.
_DATA_CONFIG = {"retention.ms": str(7 * DAY_MS), "max.message.bytes": str(16 * 1024 * 1024)}
_COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
# How long the gateway can remember a webhook delivery (its replay memory cannot outlast the records).
DELIVERIES_RETENTION_MS: Final = 30 * DAY_MS

TOPICS: Final[tuple[TopicSpec, ...]] = (
    TopicSpec(Topics.REQUESTS, 6, {"retention.ms": str(7 * DAY_MS)}, "PipelineRequest, key run id"),
    TopicSpec(Topics.DEFINITIONS, 1, _COMPACTED, "PipelineDefinition, key pipeline name; tombstone deletes"),
    TopicSpec(Topics.TASKS, 6, {"retention.ms": str(7 * DAY_MS)}, "ExtractTask, key run id"),
    TopicSpec(
        Topics.DATA_EXTRACTED,
        6,
        _DATA_CONFIG,
        "DataBatch from extract, key batch id (continuous runs: <pipeline>:<topic>:<partition>, so a "
        "source partition's batches stay in order)",
    ),
    TopicSpec(
        Topics.DATA_TRANSFORMED, 6, _DATA_CONFIG, "DataBatch from transform, key as it came from extract"
    ),
    TopicSpec(Topics.EVENTS, 6, {"retention.ms": str(7 * DAY_MS)}, "RunEvent, key run id"),
    TopicSpec(Topics.RESULTS, 3, {"retention.ms": str(30 * DAY_MS)}, "PipelineResult, key run id"),
    TopicSpec(Topics.ALERTS, 1, {"retention.ms": str(30 * DAY_MS)}, "Alert, key run id or alert kind"),
    TopicSpec(
        Topics.DEAD_LETTERS,
        3,
        {"retention.ms": str(30 * DAY_MS), "max.message.bytes": str(16 * 1024 * 1024)},
        "DeadLetter, key run id (a user topic's unreadable event, which has no run: its own key)",
    ),
    TopicSpec(
        Topics.CONTROL, 6, {"retention.ms": str(7 * DAY_MS)}, "RunControl (finalize/abort), key run id"
    ),
    TopicSpec(Topics.WATERMARKS, 1, _COMPACTED, "PipelineWatermark, key pipeline name"),
    TopicSpec(Topics.SCHEMAS, 1, _COMPACTED, "Avro schema JSON, key fingerprint (hex)"),
    TopicSpec(
        Topics.STREAMS, 1, _COMPACTED, "StreamRun (continuous pipelines' desired state), key pipeline name"
    ),
    TopicSpec(
        Topics.SCHEDULES,
        1,
        _COMPACTED,
        "ScheduleState (last tick fired per schedule), key <definition>#<rule>",
    ),
    # Not compacted: the *first* claim of a key is the delivery, and compaction would keep the last.
    TopicSpec(
        Topics.DELIVERIES,
        3,
        {"retention.ms": str(DELIVERIES_RETENTION_MS)},
        "WebhookDelivery (the gateway's replay memory), key <source>:<identity>",
    ),
    TopicSpec(
        Topics.API_KEYS,
        1,
        _COMPACTED,
        "ApiKey (hashed; a revocation is a new record), key key id; every gateway replica reads it all",
    ),
    TopicSpec(
        Topics.AUDIT,
        3,
        {"retention.ms": str(365 * DAY_MS)},
        "AuditRecord of every mutating REST and CLI call, key tenant (a tenant's records stay in order)",
    ),
    # The run history: compacted, never deleted by age, so a run's summary outlives its events (7 days).
    TopicSpec(
        Topics.RUNS,
        3,
        _COMPACTED,
        "RunSummary (the latest summary of a run, written by the monitor), key run id",
    ),
    # The stages' backlog for the console: compacted, one small record per consumer group.
    TopicSpec(
        Topics.LAG,
        1,
        _COMPACTED,
        "ConsumerLag (a consumer group's backlog per topic, measured by the monitor), key group",
    ),
)


# ------------------------------------------------------------------------ tenants on the Kafka door
# A tenant name becomes part of a topic and a user name: Kafka's topic characters without the dot (so one
# tenant's topic is never a prefix-sibling of another's), bounded well below Kafka's 249.
TENANT_NAME: Final = "[a-z0-9][a-z0-9_-]{0,63}"
_TENANT_NAME = re.compile(TENANT_NAME)


def checked_tenant(tenant: str) -> str:
    if not _TENANT_NAME.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} cannot name a Kafka topic and user (a-z 0-9 _ -, at most 64)")
    return tenant


def tenant_requests_prefix(suffix: str = "") -> str:
    return f"{Topics.REQUESTS}{suffix}.tenant."


def tenant_requests_topic(tenant: str, suffix: str = "") -> str:
    """Where ``tenant`` (and only it) submits requests on the Kafka door."""
    return tenant_requests_prefix(suffix) + checked_tenant(tenant)


def tenant_requests_pattern(suffix: str = "") -> str:
    """A subscription to every tenant's request topic of the deployment whose topics carry ``suffix``, the
    ones created later included: librdkafka takes a topic starting with ``^`` as a regular expression and
    re-evaluates it at each metadata refresh. It matches exactly the names ``tenant_of_topic`` accepts.

    Kafka topic names hold only letters, digits, ``.``, ``_`` and ``-``, so escaping the dots is all the
    literal part needs (and keeps the expression within what librdkafka's own regex engine reads)."""
    prefix = tenant_requests_prefix(suffix)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise ValueError(f"topic suffix {suffix!r} cannot be part of a Kafka topic name")
    return "^" + prefix.replace(".", r"\.") + TENANT_NAME + "$"


def tenant_of_topic(topic: str, suffix: str = "") -> str | None:
    """The tenant whose request topic ``topic`` is, None for any other topic (the shared requests topic
    included): the one place a topic name is read back into a tenant."""
    prefix = tenant_requests_prefix(suffix)
    if not topic.startswith(prefix):
        return None
    tenant = topic[len(prefix) :]
    return tenant if _TENANT_NAME.fullmatch(tenant) else None


def tenant_request_topics(tenants: Iterable[str], suffix: str = "") -> list[TopicSpec]:
    """The tenants' request topics, laid out as the shared one (partitions: a run's request and its events
    must share a partition number, see ``services.orchestrator.service``)."""
    (shared,) = (spec for spec in TOPICS if spec.name == Topics.REQUESTS)
    return [
        replace(
            shared,
            name=tenant_requests_topic(tenant, suffix),
            config=dict(shared.config),
            doc=f"PipelineRequest of tenant {tenant} (written only by its Kafka user), key run id",
        )
        for tenant in sorted(set(tenants))
    ]
