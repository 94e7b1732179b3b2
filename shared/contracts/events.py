"""Run events: something that happened during a run, each with a typed payload for its kind.

RunEvent v4 carries what an event has to say beyond its figures (rows, batches, duration, error) in
``payload``: a union of one record per event kind that has something to say (``PAYLOAD_KINDS``). Kinds
whose figures say everything (TASK_STARTED, BATCH_TRANSFORMED, BATCH_FAILED) have none. The Avro contract,
its compatibility check and mypy now see every field, where v1-v3 hid them as text in the string map
``details``.

``details`` stays in the schema, deprecated, only so that events written by v1-v3 writers still decode: a
model validator turns it into the typed payload (``shared.contracts.legacy``) as the event is built, in
this one place, and empties it. New code never writes it and no reader looks at it.

A payload record names its kind in ``type`` (the EventKind value), like the spec's union variants: in Avro
the union branch is chosen by the record's name, so ``type`` is not repeated inside the record; in Python
it makes the union a discriminated one, and lets an event refuse a payload of another kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, model_validator

from shared.contracts.base import (
    Contract,
    ControlAction,
    CursorKind,
    ErrorInfo,
    EventKind,
    Origin,
    RedactedText,
    RunStatus,
    Split,
    Stage,
    new_id,
    utcnow,
)
from shared.contracts.legacy import upcast_details
from shared.contracts.outcomes import MAX_SAMPLES
from shared.spec.models import OnFail, PipelineSpec

_NS = "io.aoetl.event"

# A value of a sample row: what JSON can hold without nesting (texts cut short, non-finite floats as text).
SampleValue = bool | int | float | str | None


class RunAccepted(Contract):
    """The orchestrator took the run on."""

    avro_name: ClassVar[str] = f"{_NS}.RunAccepted"
    type: Literal["RUN_ACCEPTED"] = "RUN_ACCEPTED"
    pipeline: str
    stuck_after_s: int | None = Field(None, description="no progress for this long raises an alert")
    continuous: bool = Field(False, description="a kafka source read until stopped: no splits, no end")
    spec: PipelineSpec | None = Field(
        None, description="the spec, when it is not the request's own (a definition, an intent, a watermark)"
    )
    tenant: str | None = Field(
        None, description="the request's; None in events written before RUN_ACCEPTED carried it"
    )
    parameters: dict[str, RedactedText] = Field(
        default_factory=dict, description="the run's parameters (the request's, plus defaults used)"
    )


class RunPlanned(Contract):
    """The run's source was divided into splits, one extract task each."""

    avro_name: ClassVar[str] = f"{_NS}.RunPlanned"
    type: Literal["RUN_PLANNED"] = "RUN_PLANNED"
    splits: list[Split] = Field(default_factory=list)


class SplitExtracted(Contract):
    """A task read its whole split (the event's rows_out and batches say what it produced)."""

    avro_name: ClassVar[str] = f"{_NS}.SplitExtracted"
    type: Literal["SPLIT_EXTRACTED"] = "SPLIT_EXTRACTED"
    attempt: int = 0
    split_index: int
    cursor_max: str | None = Field(None, description="incremental sources: the greatest cursor value read")
    cursor_kind: CursorKind = CursorKind.TEXT


class BatchLoaded(Contract):
    """The sink took a batch; loading is at-least-once, so a redelivered batch says ``applied=False``."""

    avro_name: ClassVar[str] = f"{_NS}.BatchLoaded"
    type: Literal["BATCH_LOADED"] = "BATCH_LOADED"
    applied: bool = Field(description="False: an earlier delivery applied the batch, nothing was written")
    bytes: int | None = Field(
        None, description="v11: bytes the batch put in the destination; None when the sink does not know"
    )


class QualityViolation(Contract):
    """Rows of a batch failed a data-quality rule."""

    avro_name: ClassVar[str] = f"{_NS}.QualityViolation"
    type: Literal["QUALITY_VIOLATION"] = "QUALITY_VIOLATION"
    rule: str
    on_fail: OnFail
    reason: str
    failed_rows: int
    sample: list[dict[str, SampleValue]] = Field(default_factory=list, description="a few failing rows")
    rows_checked: int | None = Field(None, description="v7: rows of the batch the rule was evaluated on")
    values: list[str] = Field(
        default_factory=list, max_length=MAX_SAMPLES, description="v7: a few failing values of its columns"
    )


class AgentDecision(Contract):
    """The healer's decision on a failure, within its policy.

    ``action`` and ``category`` are the agent's vocabulary (its remedy kinds and error categories): text,
    so that a new remedy is not a new wire contract that every reader must know first."""

    avro_name: ClassVar[str] = f"{_NS}.AgentDecision"
    type: Literal["AGENT_DECISION"] = "AGENT_DECISION"
    decision_id: str = Field(default_factory=new_id)
    action: str
    category: str
    reason: str
    error_class: str
    signature: str = Field(description="the error's signature: the same error is healed once")
    spec: PipelineSpec | None = Field(None, description="the healed spec, when the remedy changed it")


class TaskRetried(Contract):
    """The orchestrator issued a task again."""

    avro_name: ClassVar[str] = f"{_NS}.TaskRetried"
    type: Literal["TASK_RETRIED"] = "TASK_RETRIED"
    attempt: int
    reason: str


class TaskFailed(Contract):
    """An extract task failed (the event's error says why)."""

    avro_name: ClassVar[str] = f"{_NS}.TaskFailed"
    type: Literal["TASK_FAILED"] = "TASK_FAILED"
    attempt: int = 0
    origin: Origin | None = Field(None, description="where the failed task message was read")


class RunFinalized(Contract):
    """The load stage finalized or aborted the destination (with the event's error if it could not)."""

    avro_name: ClassVar[str] = f"{_NS}.RunFinalized"
    type: Literal["RUN_FINALIZED"] = "RUN_FINALIZED"
    action: ControlAction


class RunFinished(Contract):
    """The orchestrator published the run's result."""

    avro_name: ClassVar[str] = f"{_NS}.RunFinished"
    type: Literal["RUN_FINISHED"] = "RUN_FINISHED"
    status: RunStatus


class StreamProgress(Contract):
    """A continuous run read a batch from its topic, or is alive and idle (a heartbeat, no batch)."""

    avro_name: ClassVar[str] = f"{_NS}.StreamProgress"
    type: Literal["STREAM_PROGRESS"] = "STREAM_PROGRESS"
    heartbeat: bool = False
    topic: str | None = None
    partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    lag: int | None = Field(None, description="records of the partition not read yet, when known")


EventPayload = Annotated[
    RunAccepted
    | RunPlanned
    | SplitExtracted
    | BatchLoaded
    | QualityViolation
    | AgentDecision
    | TaskRetried
    | TaskFailed
    | RunFinalized
    | RunFinished
    | StreamProgress,
    Field(discriminator="type"),
]
PAYLOAD_TYPES: tuple[type[Contract], ...] = (
    RunAccepted,
    RunPlanned,
    SplitExtracted,
    BatchLoaded,
    QualityViolation,
    AgentDecision,
    TaskRetried,
    TaskFailed,
    RunFinalized,
    RunFinished,
    StreamProgress,
)
PAYLOAD_KINDS: dict[EventKind, type[Contract]] = {
    EventKind(p.model_fields["type"].default): p for p in PAYLOAD_TYPES
}

P = TypeVar("P", bound=Contract)


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
    details: dict[str, str] = Field(
        default_factory=dict, description="deprecated (v1-v3): read into payload on decoding, never written"
    )
    instance: str = Field("", description="service instance that emitted the event")
    payload: EventPayload | None = Field(None, description="what this kind of event says, typed")

    @model_validator(mode="before")
    @classmethod
    def _read_details(cls, data: Any) -> Any:
        return upcast_details(data)

    @model_validator(mode="after")
    def _payload_of_its_kind(self) -> RunEvent:
        expected = PAYLOAD_KINDS.get(self.kind)
        if self.payload is not None and type(self.payload) is not expected:
            raise ValueError(f"a {self.kind.value} event cannot carry a {type(self.payload).__name__}")
        return self

    def payload_as(self, model: type[P]) -> P | None:
        """The payload if it is a ``model``, else None (an event of another kind, or an old one without)."""
        return self.payload if isinstance(self.payload, model) else None
