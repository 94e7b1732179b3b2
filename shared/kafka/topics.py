"""The one declarative list of topics. The dev stack, the test fixtures, compose and k8s all create topics
from here, so partitions, retention and compaction are decided once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    DELIVERIES: Final = "aoetl.deliveries"
    API_KEYS: Final = "aoetl.auth.keys"
    AUDIT: Final = "aoetl.audit"


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
)
