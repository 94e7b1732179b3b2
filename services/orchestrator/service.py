"""The orchestrator service: validates requests, plans runs into extract tasks, folds run events into
progress, retries, times out and finishes every run with exactly one ``PipelineResult``.

Validation includes the request's parameters (``shared.spec.params``: the spec's ``${params.name}``
placeholders filled, unknown or missing parameters REJECTED with their paths) and then the spec policy
(``shared.policy.check_spec``, for the request's tenant) on the filled spec, so a parameter cannot take a
spec where its author could not: a spec it refuses is REJECTED with every issue and its field path, and no
task is ever made from it. The filled parameters travel in RUN_ACCEPTED and the result.

Requests come from the shared requests topic (the gateway, the operator's CLI, topic triggers: principals
trusted to name the tenant) and from every tenant's own request topic (a pattern subscription, so a new
tenant's topic is picked up without a restart), which only that tenant's Kafka user may write. There the
topic is the broker's word for the tenant: a request naming another tenant is REJECTED ("request on
tenant a's topic claims tenant b") rather than run as the topic's tenant, because the writer asked for
something it may not have (another tenant's definitions, connections), and silently running it otherwise
would hide both the attempt and the mistake; a stop of another tenant's run is refused and logged.

Schedule triggers are fired from the loop's tick (``services.orchestrator.schedules``): each tick's request,
with a deterministic run id, and the schedule's new state leave in one transaction; the run-id dedupe of
the book below makes a tick fired twice (two replicas during a rebalance, a restart) one run.

Requests and events are co-partitioned by run id (same partition count, same key, range assignment), so
one instance sees all of a run. All decisions leave in the same Kafka transaction as the offsets of the
messages that caused them; the run state itself is rebuilt from the input topics on every assignment
(see ``services.orchestrator.runs``), so there is no database and a restarted or new replica continues
where the previous owner of the partitions stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import TopicPartition

from services.orchestrator import metrics
from services.orchestrator.configuration import OrchestratorSettings
from services.orchestrator.healing.healer import Healer
from services.orchestrator.replay import replay_partitions
from services.orchestrator.runs import RunBook
from services.orchestrator.schedules import Scheduler
from services.orchestrator.topic_triggers import RunnerConfig, topic_rules, topic_triggers
from shared.agent.planner import IntentPlanner
from shared.avro import ModelValidationError
from shared.avro.convert import from_datum
from shared.connectors import plan_splits
from shared.contracts import (
    DEFAULT_TENANT,
    Contract,
    ErrorInfo,
    PipelineDefinition,
    PipelineRequest,
    PipelineWatermark,
    RequestAction,
    RunAccepted,
    RunEvent,
    ScheduleState,
    Split,
    Stage,
    StreamRun,
    StreamState,
    utcnow,
)
from shared.kafka.compacted import CompactedView
from shared.kafka.topics import Topics, tenant_of_topic, tenant_requests_pattern
from shared.policy import check_run_id, check_spec, load_policy, tenant_of
from shared.processing import LoopConfig
from shared.runtime import MessageContext, Output, ProcessorService
from shared.spec import SpecError, SpecIssue, parse_spec
from shared.spec.models import OnFail, PipelineSpec, PostgresSource
from shared.spec.params import fill_parameters, placeholders
from shared.transform.quality import check_row_count

_log = logging.getLogger(__name__)


def plan(spec: PipelineSpec, payload: bytes | None) -> list[Split]:
    return plan_splits(spec.source, spec.run.parallelism, payload=payload, batch_rows=spec.run.batch_rows)


def failed_row_counts(spec: PipelineSpec, rows: int) -> list[str]:
    return [f"{v.rule}: {v.reason}" for v in check_row_count(spec.quality, rows) if v.on_fail is OnFail.FAIL]


class OrchestratorService(ProcessorService[OrchestratorSettings]):
    name = "orchestrator"
    stage = Stage.ORCHESTRATE
    settings_class = OrchestratorSettings

    def __init__(self, settings: OrchestratorSettings, **kw: object):
        # First, so a model that cannot be built (unknown provider, provider package missing) stops the
        # service at start-up with the configuration exit code; deterministic without AOETL_LLM_MODEL.
        self._intent_planner = IntentPlanner.from_settings(settings.agent)
        self.policy = load_policy()  # likewise: a bad AOETL_POLICY_* value stops the service at start-up
        super().__init__(settings, **kw)  # type: ignore[arg-type]
        self.book = self._new_book()
        self._unresolved: dict[str, PipelineRequest] = {}  # replay: requests whose spec is in RUN_ACCEPTED
        self.definitions = CompactedView(
            settings.kafka, settings.topic(Topics.DEFINITIONS), PipelineDefinition, self.serde
        )
        self.watermarks = CompactedView(
            settings.kafka, settings.topic(Topics.WATERMARKS), PipelineWatermark, self.serde
        )
        self.streams = CompactedView(settings.kafka, settings.topic(Topics.STREAMS), StreamRun, self.serde)
        self.schedule_states = CompactedView(
            settings.kafka, settings.topic(Topics.SCHEDULES), ScheduleState, self.serde
        )
        offset = timedelta(seconds=settings.schedule_clock_offset_s)
        self.scheduler = Scheduler(
            self.definitions,
            self.schedule_states,
            lambda: datetime.now(UTC) + offset,
            grace_s=settings.schedule_grace_s,
            topic=settings.topic,
        )
        self.topic_triggers = topic_triggers(
            lambda: topic_rules(self.definitions, self.policy),
            RunnerConfig(
                kafka=settings.kafka,
                instance_id=settings.instance_id,
                topic_suffix=settings.topic_suffix,
                session_timeout_ms=settings.session_timeout_ms,
                transaction_timeout_ms=settings.transaction_timeout_ms,
                commit_interval_s=settings.trigger_commit_interval_s,
                kafka_timeout_s=settings.kafka_timeout_s,
            ),
            self.serde,
            refresh_s=settings.trigger_refresh_s,
        )

    def _new_book(self) -> RunBook:
        s = self.settings
        healer = Healer(s.healing) if s.healing_enabled else None
        return RunBook(
            plan, failed_row_counts, retry_backoff_s=s.retry_backoff_s, topic=s.topic, healer=healer
        )

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.REQUESTS): PipelineRequest,
            tenant_requests_pattern(self.settings.topic_suffix): PipelineRequest,
            self.settings.topic(Topics.EVENTS): RunEvent,
        }

    def loop_config(self) -> LoopConfig:
        config = super().loop_config()
        # a pattern subscription sees a new topic at the consumer's next metadata refresh (default 5 min)
        refresh = {"topic.metadata.refresh.interval.ms": int(self.settings.tenant_topics_refresh_s * 1000)}
        return dataclasses.replace(config, consumer_overrides={**config.consumer_overrides, **refresh})

    def _request_topics(self, topics: set[str]) -> list[str]:
        """The shared requests topic, then the tenants' among ``topics``."""
        tenants = sorted(t for t in topics if tenant_of_topic(t, self.settings.topic_suffix) is not None)
        return [self.settings.topic(Topics.REQUESTS), *tenants]

    # ------------------------------------------------------------------------------------ messages
    def handle(self, value: Contract, context: MessageContext) -> Sequence[Output]:
        now = utcnow()
        if isinstance(value, RunEvent):
            return self.book.on_event(value, now)
        assert isinstance(value, PipelineRequest)
        with metrics.planning_timed():  # wall and CPU time: services.orchestrator.metrics says why both
            return self._on_request(value, context, now)

    def _on_request(self, value: PipelineRequest, context: MessageContext, now: datetime) -> Sequence[Output]:
        refused = self._door_refusal(value, context.topic)
        if value.action is RequestAction.STOP:
            if refused is not None:
                _log.warning("stop of run %s refused: %s", value.run_id, refused.message)
                return []
            return self.book.on_stop(value, now)
        if refused is not None:
            name = value.spec.name if value.spec else value.definition_name
            # the topic's tenant's result: the broker vouches for who wrote it, not for whom it names
            writer = tenant_of_topic(context.topic, self.settings.topic_suffix) or tenant_of(value)
            return self.book.reject(value.run_id, value.request_id, name, [refused], now, writer)
        spec, reasons = self._spec_for(value)
        parameters = dict(value.parameters)
        if spec is not None and value.intent is None:  # placeholders are the author's, not the agent's
            spec, parameters, reasons = self._filled(spec, value.parameters)
        if spec is not None:  # every spec, inline, from a definition or from an intent
            reasons = self._policy_reasons(value, spec)
            spec = None if reasons else spec
        if spec is not None and spec.continuous:
            reasons = self._continuous_conflict(spec, value.run_id)
            spec = None if reasons else spec
        if spec is None:
            name = value.spec.name if value.spec else value.definition_name
            return self.book.reject(value.run_id, value.request_id, name, reasons, now, tenant_of(value))
        return self.book.on_request(value, self._after_watermark(spec), now, parameters=parameters)

    @staticmethod
    def _filled(
        spec: PipelineSpec, given: Mapping[str, str]
    ) -> tuple[PipelineSpec | None, dict[str, str], list[ErrorInfo]]:
        """The spec with the request's parameters in its placeholders (``shared.spec.params``); the policy
        is checked after, on the filled spec. Unknown or missing parameters are REJECTED reasons."""
        try:
            filled = fill_parameters(spec, given)
        except SpecError as err:
            reasons = [
                ErrorInfo(
                    error_class="ParameterError",
                    message=i.reason,
                    path=i.path if i.path.startswith("parameters.") else f"spec.{i.path}",
                )
                for i in err.issues
            ]
            return None, dict(given), reasons
        return filled.spec, filled.parameters, []

    def _door_refusal(self, request: PipelineRequest, topic: str) -> ErrorInfo | None:
        """Why a request from a tenant's own topic may not go on (None: it may, as may every request of
        the shared topic, whose writers are trusted to name the tenant)."""
        tenant = tenant_of_topic(topic, self.settings.topic_suffix)
        if tenant is None:
            return None
        if request.tenant != tenant:
            message = f"request on tenant {tenant}'s topic claims tenant {request.tenant}"
            return ErrorInfo(error_class="TenantMismatch", message=message, path="tenant")
        run = self.book.runs.get(request.run_id)
        if request.action is RequestAction.STOP and run is not None and run.tenant != tenant:
            message = f"tenant {tenant} may not stop another tenant's run"
            return ErrorInfo(error_class="TenantMismatch", message=message, path="run_id")
        return None

    def _policy_reasons(self, request: PipelineRequest, spec: PipelineSpec) -> list[ErrorInfo]:
        """What the spec policy refuses in this run (``shared.policy``), for the request's tenant
        (``default`` until requests carry one), as REJECTED reasons."""
        issues = check_run_id(request.run_id) + [
            SpecIssue(f"spec.{i.path}", i.reason)
            for i in check_spec(spec, self.policy, tenant=tenant_of(request))
        ]
        return [ErrorInfo(error_class="PolicyViolation", message=i.reason, path=i.path) for i in issues]

    def _continuous_conflict(self, spec: PipelineSpec, run_id: str) -> list[ErrorInfo]:
        """A pipeline reads its topic in one consumer group, so it has one continuous run at a time."""
        if run_id in self.book.runs or run_id in self.book.finished:
            return []  # a redelivered request: the book answers it
        other = self.book.continuous_run_of(spec.name)
        if other is None:
            stream = self.streams.get(spec.name)
            running = stream is not None and stream.state is StreamState.RUNNING
            if running and stream is not None and stream.run_id not in self.book.finished:
                other = stream.run_id
        if other is None or other == run_id:
            return []
        msg = f"pipeline {spec.name!r} already runs continuously as run {other}; stop it first (aoetl stop)"
        return [ErrorInfo(error_class="AlreadyRunning", message=msg, path="spec.name")]

    def _after_watermark(self, spec: PipelineSpec) -> PipelineSpec:
        """An incremental source without an explicit start continues after its last completed run."""
        source = spec.source
        if (
            not isinstance(source, PostgresSource)
            or not source.cursor_column
            or source.cursor_start is not None
        ):
            return spec
        self.watermarks.catch_up()
        mark = self.watermarks.get(spec.name)
        if mark is None or mark.cursor_column != source.cursor_column:
            return spec
        return spec.model_copy(update={"source": source.model_copy(update={"cursor_start": mark.value})})

    def _spec_for(self, request: PipelineRequest) -> tuple[PipelineSpec | None, list[ErrorInfo]]:
        given = [k for k in ("spec", "definition_name", "intent") if getattr(request, k) is not None]
        if len(given) != 1:
            why = "none" if not given else " and ".join(given)
            msg = f"a request needs exactly one of spec, definition_name or intent; it has {why}"
            return None, [ErrorInfo(error_class="InvalidRequest", message=msg)]
        if request.spec is not None:
            return request.spec, []
        if request.definition_name is not None:
            definition = self._definition(request.definition_name)
            if definition is None or definition.tenant != tenant_of(request):
                # another tenant's definition is answered exactly as one that does not exist: the
                # requester learns nothing of other tenants' names
                msg = f"no pipeline definition named {request.definition_name!r}"
                return None, [ErrorInfo(error_class="UnknownDefinition", message=msg, path="definition_name")]
            return definition.spec, []
        assert request.intent is not None
        outcome = self._intent_planner.plan(request.intent)
        if outcome.spec is None:
            return None, [
                ErrorInfo(error_class="IntentRejected", message=r, path="intent") for r in outcome.reasons
            ]
        return outcome.spec, []

    def _definition(self, name: str) -> PipelineDefinition | None:
        """The definition named ``name``; on a miss, after reading the definitions topic to its end (a
        definition applied just before its first request, or a schedule's, must be found)."""
        definition = self.definitions.get(name)
        if definition is None and isinstance(self.definitions, CompactedView):
            self.definitions.catch_up()
            definition = self.definitions.get(name)
        return definition

    def on_failure(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> Sequence[Output]:
        """A request that decodes but is not a valid pipeline: answer REJECTED with every reason (the
        message itself still goes to the dead-letter topic, for inspection)."""
        is_request = context.topic in self._request_topics({context.topic})
        if not is_request or not isinstance(exc, ModelValidationError):
            return []
        try:
            datum = from_datum(self.serde.decode_record(raw, PipelineRequest.avro_name))
        except Exception:  # not even the envelope is readable: the dead letter is all we can do
            return []
        run_id, request_id = str(datum.get("run_id", "")), str(datum.get("request_id", ""))
        spec = datum.get("spec")
        try:
            parse_spec(spec)
            reasons = [ErrorInfo(error_class="InvalidRequest", message=str(exc)[:4000])]
        except SpecError as err:
            reasons = [
                ErrorInfo(
                    error_class="SpecError", message=i.reason, path=f"spec.{i.path}" if i.path else "spec"
                )
                for i in err.issues
            ]
        name = spec.get("name") if isinstance(spec, dict) else None
        tenant = datum.get("tenant")
        tenant = tenant if isinstance(tenant, str) and tenant else DEFAULT_TENANT
        # on a tenant's own topic, the topic says whose request it was
        tenant = tenant_of_topic(context.topic, self.settings.topic_suffix) or tenant
        return self.book.reject(run_id, request_id, name, reasons, utcnow(), tenant)

    def tick(self) -> Sequence[Output]:
        return [*self.book.tick(datetime.now(UTC)), *self.scheduler.due()]

    # -------------------------------------------------------------------------------- rebalancing
    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Rebuild the runs of exactly the partitions now owned, from Kafka alone."""
        book = self._new_book()
        self._unresolved = {}
        requests = self._request_topics({tp.topic for tp in partitions})
        events = self.settings.topic(Topics.EVENTS)
        counts = replay_partitions(
            self.settings.kafka,
            consumer,
            partitions,
            self.serde,
            order=[*((topic, PipelineRequest) for topic in requests), (events, RunEvent)],
            apply=lambda value, at: self._fold(book, value, at),
        )
        self.book = book
        _log.info("rebuilt %d open runs from %s", len(book.runs), counts)
        shared_requests = self.settings.topic(Topics.REQUESTS)
        owned = {tp.partition for tp in partitions if tp.topic == shared_requests}
        self.scheduler.assign(owned, lambda: self._partition_count(consumer, shared_requests))

    def _partition_count(self, consumer: Any, topic: str) -> int:
        """How many partitions ``topic`` has (the scheduler asks on the loop thread, and again at its next
        tick if the broker did not answer)."""
        metadata = consumer.list_topics(topic, timeout=self.settings.kafka_timeout_s)
        return len(metadata.topics[topic].partitions)

    def on_rollback(self, consumer: Any) -> None:
        """An aborted transaction took back outputs the book already counts as sent (a finalize, a result,
        a retry): rebuild the runs from what is committed, exactly as after an assignment."""
        self.on_assign(consumer, consumer.assignment())

    def run(self, shutdown) -> None:
        self.definitions.start()
        self.watermarks.start()
        self.streams.start()
        self.schedule_states.start()
        self.topic_triggers.start()
        try:
            super().run(shutdown)
        finally:
            self.topic_triggers.stop()
            self.definitions.stop()
            self.watermarks.stop()
            self.streams.stop()
            self.schedule_states.stop()

    def _fold(self, book: RunBook, value: Contract, at: datetime) -> None:
        """Replay one message. A request whose spec was not inline (a definition that may have changed
        since, an intent the model would answer differently) takes the spec its RUN_ACCEPTED recorded."""
        if isinstance(value, PipelineRequest):
            if value.action is RequestAction.STOP:
                return  # what a stop did is in the stopped run's own events (RUN_FINISHED)
            if value.spec is not None and not placeholders(value.spec):
                book.on_request(value, value.spec, at, replaying=True)
            else:  # its spec (from a definition, or filled) is the one RUN_ACCEPTED recorded
                self._unresolved[value.run_id] = value
            return
        assert isinstance(value, RunEvent)
        pending = self._unresolved.pop(value.run_id, None)
        accepted = value.payload_as(RunAccepted)
        if pending is not None and accepted is not None and accepted.spec is not None:
            book.on_request(pending, accepted.spec, at, replaying=True, parameters=accepted.parameters)
        book.on_event(value, at)
