"""What the gateway does, independent of HTTP: accept a verified delivery, register definitions, submit
runs. Every write returns only after Kafka acknowledged it; the in-memory views are updated at once too
(read-your-writes), and again, idempotently, when the followers read the same records back.

A webhook delivery is accepted through the replay memory shared by every replica
(``services.gateway.acceptance``): its runs start at most once, copies are duplicates within the source's
replay window and refused after it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from services.gateway.acceptance import DeliveryAcceptor, StartedRun, WebhookAnswer
from services.gateway.bus import Bus, GatewayTopics
from services.gateway.configuration import GatewaySettings
from services.gateway.deliveries import DeliveryBook
from services.gateway.state import DefinitionCatalog, RunLedger, RunView
from services.gateway.webhooks import Delivery, read_delivery
from shared.contracts import PipelineDefinition, PipelineRequest, Trigger, TriggerKind
from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger, TriggerRule, webhook_rules_of
from shared.webhooks.sources import WebhookSource

API_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.gateway.api-run")
__all__ = ["Gateway", "RunAnswer", "StartedRun", "WebhookAnswer"]


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

    def source(self, name: str) -> WebhookSource | None:
        return self.settings.webhooks.get(name)

    # -------------------------------------------------------------------------------------- webhooks
    def read_delivery(
        self, name: str, source: WebhookSource, body: bytes, headers: Mapping[str, str]
    ) -> Delivery:
        return read_delivery(name, source, body, headers)

    async def accept(self, delivery: Delivery) -> WebhookAnswer:
        """Start the delivery's runs unless a copy did (``DeliveryAcceptor.accept``)."""
        acceptor = DeliveryAcceptor(
            self.settings, self.bus, self.deliveries, self._rules, self._publish_request
        )
        return await acceptor.accept(delivery)

    def _rules(self) -> list[TriggerRule]:
        # Rules from the settings first, then those kept inside the registered definitions.
        return [*self.settings.triggers, *webhook_rules_of(self.catalog.all())]

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
