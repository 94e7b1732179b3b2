"""The messages on Kafka other than run events (``shared.contracts.events``): requests, definitions,
tasks, batches, controls, watermarks, results, alerts, continuous runs, remembered webhook deliveries and
dead letters."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from shared.contracts.base import (
    DEFAULT_TENANT,
    AlertKind,
    BatchFormat,
    Contract,
    ControlAction,
    ErrorInfo,
    Origin,
    RedactedText,
    RequestAction,
    RunStatus,
    Severity,
    Split,
    Stage,
    StageStats,
    StreamState,
    Trigger,
    new_id,
    utcnow,
)
from shared.contracts.outcomes import RuleOutcome, WriteOutcome
from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger


# ---------------------------------------------------------------------------------------- messages
class PipelineRequest(Contract):
    """Asks for one run. Exactly one of spec, definition_name or intent says what to run."""

    avro_name: ClassVar[str] = "io.aoetl.PipelineRequest"
    request_id: str = Field(default_factory=new_id)
    run_id: str = Field(default_factory=new_id)
    submitted_at: datetime = Field(default_factory=utcnow)
    requested_by: str = "unknown"
    tenant: str = Field(DEFAULT_TENANT, description="whose run it is (the gateway: the caller's tenant)")
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
    tenant: str = Field(DEFAULT_TENANT, description="no other tenant sees, changes or triggers it")
    triggers: list[DefinitionTrigger] = Field(
        default_factory=list, description="webhook, topic and schedule rules that start this pipeline"
    )


class ScheduleState(Contract):
    """The last tick a definition's schedule rule fired, in the compacted schedules topic keyed
    ``<definition>#<rule>``; written in the same transaction as the tick's request, so after a restart the
    orchestrator knows which ticks were fired (and which were missed) from Kafka alone."""

    avro_name: ClassVar[str] = "io.aoetl.ScheduleState"
    definition: str
    rule: int = Field(description="place of the rule among the definition's schedule rules")
    tick: datetime = Field(description="the last tick fired (UTC)")
    run_id: str = Field(description="the run that tick started")
    fired_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        return schedule_state_key(self.definition, self.rule)


def schedule_state_key(definition: str, rule: int) -> str:
    return f"{definition}#{rule}"


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
    tenant: str = Field(DEFAULT_TENANT, description="its request's: only that tenant reads the result")
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    stages: list[StageStats] = Field(default_factory=list)
    errors: list[ErrorInfo] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list, description="agent decisions, in order")
    quality: list[RuleOutcome] = Field(default_factory=list, description="v3: per row-level quality rule")
    written: list[WriteOutcome] = Field(default_factory=list, description="v3: what was written where")
    parameters: dict[str, RedactedText] = Field(
        default_factory=dict, description="v4: the run's parameters (the request's, plus defaults used)"
    )


class Alert(Contract):
    avro_name: ClassVar[str] = "io.aoetl.Alert"
    alert_id: str = Field(default_factory=new_id)
    kind: AlertKind
    severity: Severity
    message: RedactedText
    at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None
    pipeline: str | None = None
    tenant: str = Field(
        DEFAULT_TENANT, description="its run's; 'default' (the deployment's own) for the whole system's"
    )
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


class DeliveryState(StrEnum):
    CLAIMED = "CLAIMED"  # a gateway replica saw the delivery first and is requesting its runs
    STARTED = "STARTED"  # every run of the claim is on the requests topic


class DeliveryRun(Contract):
    """One run a webhook delivery starts: everything needed to request it again, identically."""

    avro_name: ClassVar[str] = "io.aoetl.DeliveryRun"
    run_id: str
    definition: str
    parameters: dict[str, str] = Field(default_factory=dict)


class WebhookDelivery(Contract):
    """A webhook delivery the gateway has seen, on the deliveries topic keyed by ``<source>:<identity>``.
    The first CLAIMED record of a key (in log order) is the delivery; a later one is a copy that lost the
    race. A STARTED record with the same claim id says its runs were requested."""

    avro_name: ClassVar[str] = "io.aoetl.WebhookDelivery"
    source: str
    identity: str = Field(description="'id:<signed id>' or 'sha256:<hex of the signed body>'")
    claim_id: str
    state: DeliveryState
    delivery_id: str
    event: str | None = None
    first_seen_at: datetime
    runs: list[DeliveryRun] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.source}:{self.identity}"


class DeadLetter(Contract):
    """A message or row set that could not be processed, with everything needed to inspect and re-drive it."""

    avro_name: ClassVar[str] = "io.aoetl.DeadLetter"
    dead_letter_id: str = Field(default_factory=new_id)
    origin: Origin
    stage: Stage
    error: ErrorInfo
    at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None
    tenant: str | None = Field(
        None, description="when the stage knew it; None: resolved through run_id (shared.dead_letters)"
    )
    rule: str | None = Field(None, description="quality rule name for quarantined rows")
    payload: bytes = Field(description="the original message bytes, or an Arrow IPC batch of rows")
    payload_format: str = Field("raw", description="'raw' message bytes or 'arrow_ipc' rows")
    attempt: int = 0
    recipient: str | None = Field(
        None, description="v3: the one consumer that gave up (an alert endpoint); None: every consumer"
    )
