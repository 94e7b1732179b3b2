"""The base of every contract: ``Contract`` itself, the ids and clock of messages, the enums, and the
small records that messages embed (errors, triggers, splits, stage figures, origins)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.redaction import redact

# The tenant of whatever was made before tenants existed, and of a deployment that names none: old messages
# decode into it (the Avro default) and a CLI without a configured tenant speaks for it.
DEFAULT_TENANT = "default"


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    # Avro timestamp-millis keeps milliseconds; truncating here makes a round trip compare equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# An error's or an alert's text, masked of every secret this process knows whenever the record is built
# (from an exception, by hand, or decoded): results, run events, dead letters and alerts all carry their
# texts in these fields, so a message that names a secret cannot leave through any of them.
RedactedText = Annotated[str, AfterValidator(redact)]


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
    RUN_FINISHED = "RUN_FINISHED"  # the orchestrator published the result
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


class CursorKind(StrEnum):
    TEXT = "text"  # ISO dates and timestamps of one column order correctly as text
    NUMBER = "number"  # numbers must be compared as numbers, not as text


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
    message: RedactedText
    transient: bool = False
    path: str | None = Field(None, description="field path in the spec, for validation errors")

    @classmethod
    def from_exception(cls, exc: BaseException, *, max_len: int = 4000) -> ErrorInfo:
        from shared.errors import is_transient

        # Redacted before it is cut: a cut could leave the first part of a secret no pattern matches.
        message = redact(str(exc))[:max_len]
        return cls(error_class=type(exc).__name__, message=message, transient=is_transient(exc))


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
