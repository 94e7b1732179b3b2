"""Pydantic models of every message on Kafka. Each has an ``avro_name`` naming its ``.avsc`` in
``schemas/``; ``tests/unit/test_contracts.py`` proves models and schemas agree field by field.

Timestamps are UTC ``datetime`` (Avro ``timestamp-millis``). Ids are strings (UUID4 hex unless said).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    # Avro timestamp-millis keeps milliseconds; truncating here makes a round trip compare equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    avro_name: ClassVar[str]


# --------------------------------------------------------------------------------------------- enums
class TriggerKind(StrEnum):
    API = "api"
    CLI = "cli"
    WEBHOOK = "webhook"
    EVENT = "event"
    SCHEDULE = "schedule"


class Stage(StrEnum):
    ORCHESTRATE = "orchestrate"
    EXTRACT = "extract"
    TRANSFORM = "transform"
    LOAD = "load"
    GATEWAY = "gateway"
    MONITOR = "monitor"


class SplitKind(StrEnum):
    WHOLE = "whole"  # the whole source in one task
    BYTE_RANGE = "byte_range"  # [start, end) bytes of a line-oriented file, aligned to line starts
    ROW_GROUPS = "row_groups"  # Parquet row groups [start, end)
    KEY_RANGE = "key_range"  # PostgreSQL rows with lower <= split_column < upper
    PAGES = "pages"  # HTTP pages
    EVENT = "event"  # records carried in the request payload


class RunStatus(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


class EventKind(StrEnum):
    RUN_ACCEPTED = "RUN_ACCEPTED"
    RUN_PLANNED = "RUN_PLANNED"
    TASK_STARTED = "TASK_STARTED"
    SPLIT_EXTRACTED = "SPLIT_EXTRACTED"  # rows_out and batches say what the split produced
    BATCH_TRANSFORMED = "BATCH_TRANSFORMED"
    BATCH_LOADED = "BATCH_LOADED"
    BATCH_FAILED = "BATCH_FAILED"
    TASK_FAILED = "TASK_FAILED"
    QUALITY_VIOLATION = "QUALITY_VIOLATION"
    TASK_RETRIED = "TASK_RETRIED"
    AGENT_DECISION = "AGENT_DECISION"
    RUN_FINALIZED = "RUN_FINALIZED"  # the load stage finalized (or aborted) the destination
    RUN_FINISHED = "RUN_FINISHED"  # the orchestrator published the result; details["status"]
    STREAM_PROGRESS = "STREAM_PROGRESS"  # a continuous run read a batch (or is alive and idle) from its topic


class RequestAction(StrEnum):
    RUN = "RUN"  # start a run
    STOP = "STOP"  # stop the run named by run_id (a continuous run, or a one-shot run still in progress)


class StreamState(StrEnum):
    RUNNING = "RUNNING"  # extract instances read the source topic of this continuous run
    STOPPED = "STOPPED"  # stopped or finished: its readers leave; its consumer group keeps the offsets


class BatchFormat(StrEnum):
    ARROW_IPC = "ARROW_IPC"  # an Arrow IPC stream, buffers LZ4-compressed


class ControlAction(StrEnum):
    FINALIZE = "FINALIZE"  # the run succeeded: make the load visible (replace swap, success marker)
    ABORT = "ABORT"  # the run failed: drop staged data


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class AlertKind(StrEnum):
    RUN_FAILED = "RUN_FAILED"
    RUN_STUCK = "RUN_STUCK"
    QUALITY_THRESHOLD = "QUALITY_THRESHOLD"
    DEAD_LETTER_GROWTH = "DEAD_LETTER_GROWTH"
    CONSUMER_LAG = "CONSUMER_LAG"


# ------------------------------------------------------------------------------------- small records
class ErrorInfo(Contract):
    avro_name: ClassVar[str] = "io.aoetl.ErrorInfo"
    error_class: str
    message: str
    transient: bool = False
    path: str | None = Field(None, description="field path in the spec, for validation errors")

    @classmethod
    def from_exception(cls, exc: BaseException, *, max_len: int = 4000) -> ErrorInfo:
        from shared.errors import is_transient

        return cls(error_class=type(exc).__name__, message=str(exc)[:max_len], transient=is_transient(exc))


class Trigger(Contract):
    avro_name: ClassVar[str] = "io.aoetl.Trigger"
    kind: TriggerKind = TriggerKind.API
    source: str | None = Field(None, description="webhook source or topic name that fired")
    delivery_id: str | None = Field(None, description="webhook delivery id or topic/partition/offset")


class Split(Contract):
    avro_name: ClassVar[str] = "io.aoetl.Split"
    kind: SplitKind
    index: int
    count: int
    uri: str | None = None
    start: int | None = None
    end: int | None = None
    lower: str | None = None
    upper: str | None = None


class StageStats(Contract):
    avro_name: ClassVar[str] = "io.aoetl.StageStats"
    stage: Stage
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    batches: int = 0
    duration_ms: int = 0


class Origin(Contract):
    """Where a dead letter came from, so it can be inspected and re-driven."""

    avro_name: ClassVar[str] = "io.aoetl.Origin"
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    schema_fingerprint: str | None = Field(None, description="hex CRC-64-AVRO of the writer schema, if known")


# ---------------------------------------------------------------------------------------- messages
class PipelineRequest(Contract):
    """Asks for one run. Exactly one of spec, definition_name or intent says what to run."""

    avro_name: ClassVar[str] = "io.aoetl.PipelineRequest"
    request_id: str = Field(default_factory=new_id)
    run_id: str = Field(default_factory=new_id)
    submitted_at: datetime = Field(default_factory=utcnow)
    requested_by: str = "unknown"
    trigger: Trigger = Field(default_factory=Trigger)
    spec: PipelineSpec | None = None
    definition_name: str | None = None
    intent: str | None = Field(None, description="natural-language request for the agent")
    parameters: dict[str, str] = Field(default_factory=dict)
    payload: bytes | None = Field(None, description="event payload (JSON) for an event source")
    action: RequestAction = Field(RequestAction.RUN, description="RUN starts a run; STOP stops run_id")


class PipelineDefinition(Contract):
    """A registered pipeline, kept in the compacted definitions topic keyed by name."""

    avro_name: ClassVar[str] = "io.aoetl.PipelineDefinition"
    name: str
    version: int = 1
    spec: PipelineSpec
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = "unknown"
    triggers: list[DefinitionTrigger] = Field(
        default_factory=list, description="webhook and topic rules that start this pipeline"
    )


class ExtractTask(Contract):
    avro_name: ClassVar[str] = "io.aoetl.ExtractTask"
    run_id: str
    task_id: str
    attempt: int = 0
    split: Split
    spec: PipelineSpec
    payload: bytes | None = None
    created_at: datetime = Field(default_factory=utcnow)


class DataBatch(Contract):
    """A slice of rows moving between stages. The spec travels with the batch so that every stage is
    stateless and any replica can take any batch."""

    avro_name: ClassVar[str] = "io.aoetl.DataBatch"
    run_id: str
    task_id: str
    batch_id: str = Field(description="deterministic: '<task_id>:<seq>', the exactly-once key at the sink")
    seq: int
    stage: Stage
    row_count: int
    format: BatchFormat = BatchFormat.ARROW_IPC
    payload: bytes
    spec: PipelineSpec
    produced_at: datetime = Field(default_factory=utcnow)


class RunEvent(Contract):
    avro_name: ClassVar[str] = "io.aoetl.RunEvent"
    event_id: str = Field(default_factory=new_id)
    run_id: str
    kind: EventKind
    stage: Stage
    at: datetime = Field(default_factory=utcnow)
    task_id: str | None = None
    batch_id: str | None = None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    batches: int = 0
    duration_ms: int = 0
    error: ErrorInfo | None = None
    details: dict[str, str] = Field(default_factory=dict)
    instance: str = Field("", description="service instance that emitted the event")


class RunControl(Contract):
    """Orchestrator -> load: end of a run. Sinks apply it idempotently."""

    avro_name: ClassVar[str] = "io.aoetl.RunControl"
    run_id: str
    action: ControlAction
    spec: PipelineSpec
    at: datetime = Field(default_factory=utcnow)


class PipelineWatermark(Contract):
    """How far an incremental pipeline has read its source: the greatest cursor value of its last
    completed run. Kept in the compacted watermarks topic keyed by pipeline name; the next run of the
    pipeline starts after it."""

    avro_name: ClassVar[str] = "io.aoetl.PipelineWatermark"
    pipeline: str
    cursor_column: str
    value: str = Field(description="the greatest cursor value loaded, as text (SQL literal form)")
    run_id: str
    updated_at: datetime = Field(default_factory=utcnow)


class PipelineResult(Contract):
    """Exactly one per run."""

    avro_name: ClassVar[str] = "io.aoetl.PipelineResult"
    run_id: str
    request_id: str
    pipeline: str | None
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    stages: list[StageStats] = Field(default_factory=list)
    errors: list[ErrorInfo] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list, description="agent decisions, in order")


class Alert(Contract):
    avro_name: ClassVar[str] = "io.aoetl.Alert"
    alert_id: str = Field(default_factory=new_id)
    kind: AlertKind
    severity: Severity
    message: str
    at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None
    pipeline: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class StreamRun(Contract):
    """The desired state of a continuous pipeline (kafka source), kept in the compacted streams topic keyed
    by pipeline name: extract instances read the topic of every RUNNING one, in consumer group
    ``aoetl-stream.<pipeline>``, so a pipeline has at most one continuous run at a time."""

    avro_name: ClassVar[str] = "io.aoetl.StreamRun"
    pipeline: str
    run_id: str
    state: StreamState
    spec: PipelineSpec
    at: datetime = Field(default_factory=utcnow)


class DeadLetter(Contract):
    """A message or row set that could not be processed, with everything needed to inspect and re-drive it."""

    avro_name: ClassVar[str] = "io.aoetl.DeadLetter"
    dead_letter_id: str = Field(default_factory=new_id)
    origin: Origin
    stage: Stage
    error: ErrorInfo
    at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None
    rule: str | None = Field(None, description="quality rule name for quarantined rows")
    payload: bytes = Field(description="the original message bytes, or an Arrow IPC batch of rows")
    payload_format: str = Field("raw", description="'raw' message bytes or 'arrow_ipc' rows")
    attempt: int = 0


MESSAGE_TYPES: tuple[type[Contract], ...] = (
    PipelineRequest,
    PipelineDefinition,
    ExtractTask,
    DataBatch,
    RunEvent,
    RunControl,
    PipelineWatermark,
    PipelineResult,
    Alert,
    DeadLetter,
    StreamRun,
)
