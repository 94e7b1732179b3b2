"""What the gateway does, independent of HTTP: accept a verified delivery, register definitions, submit
runs. Every write returns only after Kafka acknowledged it; the in-memory views are updated at once too
(read-your-writes), and again, idempotently, when the followers read the same records back.

A webhook delivery is accepted through the shared replay memory (``services.gateway.deliveries``): claimed
on the deliveries topic, its runs requested by whichever replica's claim came first, every other copy
answered from that claim, as a duplicate within the source's ``replay_window_s`` and refused (409) after.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from services.gateway.bus import Bus, GatewayTopics
from services.gateway.configuration import GatewaySettings
from services.gateway.deliveries import DeliveryBook, Remembered
from services.gateway.exceptions import GatewayTransientError, ReplayRefusedError
from services.gateway.state import DefinitionCatalog, RunLedger, RunView
from services.gateway.webhooks import Delivery, read_delivery
from shared.contracts import (
    DeliveryRun,
    DeliveryState,
    PipelineDefinition,
    PipelineRequest,
    Trigger,
    TriggerKind,
    WebhookDelivery,
    new_id,
    utcnow,
)
from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger, match_rules, webhook_rules_of
from shared.webhooks.sources import WebhookSource

API_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.gateway.api-run")
# A delivery attempt (claim, requests, STARTED record) may take this many send timeouts before it gives up
# (503); another replica takes over an unfinished claim only after that, plus the replicas' clock skew.
ATTEMPT_SEND_TIMEOUTS = 3
CLOCK_SKEW_S = 5.0


class StartedRun(BaseModel):
    run_id: str
    definition: str
    duplicate: bool = Field(description="this run was already requested by an earlier copy of the delivery")


class WebhookAnswer(BaseModel):
    source: str
    delivery_id: str
    event: str | None
    duplicate: bool = Field(description="every run of this delivery had already been requested")
    run_id: str | None = Field(description="the first run started (None when no trigger rule matched)")
    runs: list[StartedRun]

    @property
    def published(self) -> bool:
        return any(not r.duplicate for r in self.runs)


class RunAnswer(BaseModel):
    run_id: str
    request_id: str
    duplicate: bool


@dataclass
class Gateway:
    settings: GatewaySettings
    bus: Bus
    ledger: RunLedger
    catalog: DefinitionCatalog
    runs: RunView
    deliveries: DeliveryBook

    @classmethod
    def in_memory(cls, settings: GatewaySettings, bus: Bus) -> Gateway:
        return cls(
            settings,
            bus,
            RunLedger(settings.dedupe_capacity),
            DefinitionCatalog(),
            RunView(settings.runs_capacity),
            DeliveryBook(settings.delivery_memory_s, settings.delivery_capacity),
        )

    @property
    def topics(self) -> GatewayTopics:
        return GatewayTopics.of(self.settings)

    @property
    def attempt_s(self) -> float:
        return ATTEMPT_SEND_TIMEOUTS * self.settings.send_timeout_s

    def source(self, name: str) -> WebhookSource | None:
        return self.settings.webhooks.get(name)

    # -------------------------------------------------------------------------------------- webhooks
    def read_delivery(
        self, name: str, source: WebhookSource, body: bytes, headers: Mapping[str, str]
    ) -> Delivery:
        return read_delivery(name, source, body, headers)

    async def accept(self, delivery: Delivery) -> WebhookAnswer:
        """Start the delivery's runs (one per matching trigger rule and definition) unless a copy did:
        answered as a duplicate within the source's replay window, ``ReplayRefusedError`` after it."""
        async with self.deliveries.turn(delivery.key):
            try:
                async with asyncio.timeout(self.attempt_s):
                    return await self._accept_in_turn(delivery)
            except TimeoutError as exc:
                raise GatewayTransientError(f"accepting the delivery took over {self.attempt_s:g}s") from exc

    async def _accept_in_turn(self, delivery: Delivery) -> WebhookAnswer:
        seen = self.deliveries.get(delivery.key, time.time())
        mine = False
        if seen is None:
            seen, mine = await self._claim(delivery)
        age = time.time() - seen.first_seen
        window = self.settings.webhooks[delivery.source].replay_window_s
        if not mine and age > window:
            raise ReplayRefusedError(delivery.source, seen.first_seen, window)
        if seen.started:
            return self._answer(delivery, seen, published=[False] * len(seen.runs))
        if not mine and not self.deliveries.abandoned_here(seen.claim_id):
            # Another replica's attempt may still be running: give it its time before taking over.
            takeover_at = seen.first_seen + self.attempt_s + CLOCK_SKEW_S
            wait_s = min(takeover_at - time.time(), self.settings.send_timeout_s)
            if await self.deliveries.wait_started(delivery.key, wait_s):
                return self._answer(delivery, seen, published=[False] * len(seen.runs))
            if time.time() < takeover_at:
                raise GatewayTransientError("another replica is accepting a copy of this delivery; retry")
            if age > self.settings.history_s:
                # The requests history no longer says whether its runs were requested: never risk a
                # second run of an old claim.
                return self._answer(delivery, seen, published=[False] * len(seen.runs))
        return await self._start(delivery, seen)

    async def _claim(self, delivery: Delivery) -> tuple[Remembered, bool]:
        """Append a claim and read the log up to it: ``(the first claim of this delivery, is it ours)``."""
        runs = self._plan(delivery)
        claim = WebhookDelivery(
            source=delivery.source,
            identity=delivery.identity,
            claim_id=new_id(),
            state=DeliveryState.CLAIMED if runs else DeliveryState.STARTED,  # nothing to start: done
            delivery_id=delivery.delivery_id,
            event=delivery.event,
            first_seen_at=utcnow(),
            runs=runs,
        )
        position = await self.bus.publish(self.topics.deliveries, delivery.key, claim)
        self.deliveries.claimed_here(claim.claim_id)
        await self.bus.caught_up_to(position)
        self.deliveries.apply(claim)  # a no-op once the follower has read it; feeds a follower-less bus
        seen = self.deliveries.get(delivery.key, time.time()) or Remembered.of(claim)
        return seen, seen.claim_id == claim.claim_id

    def _plan(self, delivery: Delivery) -> list[DeliveryRun]:
        runs: list[DeliveryRun] = []
        seen: set[str] = set()
        # Rules from the settings first, then those kept inside the registered definitions.
        rules = [*self.settings.triggers, *webhook_rules_of(self.catalog.all())]
        for match in match_rules(rules, delivery.source, delivery.event, delivery.payload):
            if match.definition in seen:
                continue
            seen.add(match.definition)
            runs.append(
                DeliveryRun(
                    run_id=delivery.run_id(match.definition),
                    definition=match.definition,
                    parameters=match.parameters,
                )
            )
        return runs

    async def _start(self, delivery: Delivery, seen: Remembered) -> WebhookAnswer:
        """Request the claim's runs (each at most once: the ledger skips what is already acknowledged),
        then record the claim STARTED."""
        published = []
        for run in seen.runs:
            request = PipelineRequest(
                run_id=run.run_id,
                requested_by=f"webhook:{delivery.source}",
                trigger=Trigger(
                    kind=TriggerKind.WEBHOOK, source=delivery.source, delivery_id=seen.delivery_id
                ),
                definition_name=run.definition,
                parameters=run.parameters,
                payload=delivery.body,
            )
            published.append(await self._publish_request(request))
        started = WebhookDelivery(
            source=delivery.source,
            identity=delivery.identity,
            claim_id=seen.claim_id,
            state=DeliveryState.STARTED,
            delivery_id=seen.delivery_id,
            event=seen.event,
            first_seen_at=_at(seen.first_seen),
            runs=list(seen.runs),
        )
        await self.bus.publish(self.topics.deliveries, delivery.key, started)
        self.deliveries.apply(started)
        return self._answer(delivery, seen, published=published)

    @staticmethod
    def _answer(delivery: Delivery, seen: Remembered, *, published: list[bool]) -> WebhookAnswer:
        started = [
            StartedRun(run_id=run.run_id, definition=run.definition, duplicate=not new)
            for run, new in zip(seen.runs, published, strict=True)
        ]
        return WebhookAnswer(
            source=delivery.source,
            delivery_id=seen.delivery_id,
            event=seen.event,
            duplicate=bool(started) and all(r.duplicate for r in started),
            run_id=started[0].run_id if started else None,
            runs=started,
        )

    async def _publish_request(self, request: PipelineRequest) -> bool:
        async def send() -> None:
            await self.bus.publish(self.topics.requests, request.run_id, request)
            self.runs.on_request(request)

        return await self.ledger.publish_once(request.run_id, send)

    # ------------------------------------------------------------------------------------------ runs
    async def submit(
        self,
        *,
        spec: PipelineSpec | None,
        definition: str | None,
        parameters: dict[str, str],
        payload: Any,
        requested_by: str,
        idempotency_key: str | None,
    ) -> RunAnswer:
        run_id = uuid.uuid5(API_RUN_NAMESPACE, idempotency_key).hex if idempotency_key else uuid.uuid4().hex
        request = PipelineRequest(
            run_id=run_id,
            requested_by=requested_by,
            trigger=Trigger(kind=TriggerKind.API, delivery_id=idempotency_key),
            spec=spec,
            definition_name=definition,
            parameters=parameters,
            payload=None if payload is None else json.dumps(payload).encode(),
        )
        published = await self._publish_request(request)
        known = self.runs.get(run_id)
        request_id = known.request_id if not published and known and known.request_id else request.request_id
        return RunAnswer(run_id=run_id, request_id=request_id, duplicate=not published)

    # ----------------------------------------------------------------------------------- definitions
    async def put_definition(
        self, spec: PipelineSpec, updated_by: str, triggers: Sequence[DefinitionTrigger] = ()
    ) -> tuple[PipelineDefinition, bool]:
        """Publish a new version unless spec and triggers are unchanged; ``(definition, changed)``."""
        current = self.catalog.get(spec.name)
        if current is not None and current.spec == spec and current.triggers == list(triggers):
            return current, False
        definition = PipelineDefinition(
            name=spec.name,
            version=self.catalog.next_version(spec.name),
            spec=spec,
            updated_by=updated_by,
            triggers=list(triggers),
        )
        await self.bus.publish(self.topics.definitions, spec.name, definition)
        self.catalog.apply(spec.name, definition)
        return definition, True

    async def delete_definition(self, name: str) -> bool:
        if self.catalog.get(name) is None:
            return False
        await self.bus.publish(self.topics.definitions, name, None)  # tombstone: compaction forgets it
        self.catalog.apply(name, None)
        return True


def _at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)
