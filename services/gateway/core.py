"""What the gateway does, independent of HTTP: accept a verified delivery, register definitions, submit and
stop runs, store and revoke API keys. Who may do it, and on which tenant's objects, is decided before
(``access.py``, ``app.py``); what is written here carries the tenant it is given. Every write returns only
after Kafka acknowledged it (but a delivery's STARTED record, written after the answer: see
``services.gateway.acceptance``); the in-memory views are updated at once too (read-your-writes), and again,
idempotently, when the followers read the same records back.

A webhook delivery is accepted through the replay memory shared by every replica
(``services.gateway.acceptance``): its runs start at most once, copies are duplicates within the source's
replay window and refused after it, and a source starts only the definitions of its own tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from services.gateway.acceptance import DeliveryAcceptor, StartedRun, WebhookAnswer
from services.gateway.bus import Bus, GatewayTopics
from services.gateway.configuration import GatewaySettings
from services.gateway.deliveries import DeliveryBook
from services.gateway.records import RecordBook
from services.gateway.state import DefinitionCatalog, RunLedger, RunView
from services.gateway.webhooks import Delivery, read_delivery
from shared.auth.keys import IssuedKey, KeyRing, revoke
from shared.auth.oidc import OidcVerifier
from shared.contracts import (
    DEFAULT_TENANT,
    ApiKey,
    PipelineDefinition,
    PipelineRequest,
    RequestAction,
    Trigger,
    TriggerKind,
)
from shared.spec.models import PipelineSpec
from shared.tracing import spans as tracing
from shared.triggers import DefinitionTrigger, TriggerRule, webhook_rules_of
from shared.webhooks.sources import WebhookSource

API_RUN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.gateway.api-run")
__all__ = ["Gateway", "RunAnswer", "StartedRun", "WebhookAnswer", "api_run_id"]


def api_run_id(idempotency_key: str | None) -> str:
    """The same Idempotency-Key always names the same run; without one, every call is a new run."""
    return uuid.uuid5(API_RUN_NAMESPACE, idempotency_key).hex if idempotency_key else uuid.uuid4().hex


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
    keys: KeyRing = field(default_factory=lambda: KeyRing(10.0))
    oidc: OidcVerifier | None = None
    records: RecordBook = field(default_factory=lambda: RecordBook(1000))  # alerts, dead letters

    @classmethod
    def in_memory(
        cls,
        settings: GatewaySettings,
        bus: Bus,
        *,
        keys: KeyRing | None = None,
        oidc: OidcVerifier | None = None,
    ) -> Gateway:
        return cls(
            settings,
            bus,
            RunLedger(settings.dedupe_capacity),
            DefinitionCatalog(),
            RunView(settings.runs_capacity),
            DeliveryBook(settings.delivery_memory_s, settings.delivery_capacity),
            keys or KeyRing(settings.auth_keys_max_staleness_s),
            oidc,
            RecordBook(settings.records_per_tenant),
        )

    # the topic names of ``settings`` (computed once per settings object: a delivery asks three times)
    _topics: tuple[GatewaySettings, GatewayTopics] | None = field(default=None, init=False, repr=False)

    @property
    def topics(self) -> GatewayTopics:
        cached = self._topics
        if cached is None or cached[0] is not self.settings:
            cached = self._topics = (self.settings, GatewayTopics.of(self.settings))
        return cached[1]

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
            self.settings,
            self.bus,
            self.deliveries,
            self._rules,
            self._publish_request,
            self.topics.deliveries,
        )
        return await acceptor.accept(delivery)

    def _rules(self, tenant: str) -> list[TriggerRule]:
        # Rules from the settings first (the operator's), then those kept inside the registered
        # definitions of the tenant only: no tenant's trigger matches another tenant's source.
        return [*self.settings.triggers, *webhook_rules_of(self.catalog.of_tenant(tenant))]

    async def _publish_request(self, request: PipelineRequest) -> bool:
        async def send() -> None:
            # the run's trace: the request record carries this span (under the HTTP request's, if traced)
            topic = self.topics.requests
            with tracing.producing("gateway PipelineRequest", request, stage="gateway", topic=topic):
                await self.bus.publish(topic, request.run_id, request)
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
        run_id: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> RunAnswer:
        run_id = run_id or api_run_id(idempotency_key)
        request = PipelineRequest(
            run_id=run_id,
            requested_by=requested_by,
            tenant=tenant,
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

    async def stop(self, run_id: str, requested_by: str, tenant: str = DEFAULT_TENANT) -> PipelineRequest:
        """Ask the orchestrator to stop ``run_id`` (keyed by the run id, as the CLI does, so the run's owner
        gets it). Not deduplicated: stopping twice is harmless."""
        request = PipelineRequest(
            run_id=run_id,
            action=RequestAction.STOP,
            requested_by=requested_by,
            tenant=tenant,
            trigger=Trigger(kind=TriggerKind.API),
        )
        await self.bus.publish(self.topics.requests, run_id, request)
        return request

    # ----------------------------------------------------------------------------------- definitions
    async def put_definition(
        self,
        spec: PipelineSpec,
        updated_by: str,
        triggers: Sequence[DefinitionTrigger] = (),
        tenant: str = DEFAULT_TENANT,
    ) -> tuple[PipelineDefinition, bool]:
        """Publish a new version unless spec and triggers are unchanged; ``(definition, changed)``. The
        caller has checked that the name is not another tenant's."""
        current = self.catalog.get(spec.name)
        unchanged = current is not None and current.spec == spec and current.triggers == list(triggers)
        if current is not None and unchanged and current.tenant == tenant:
            return current, False
        definition = PipelineDefinition(
            name=spec.name,
            version=self.catalog.next_version(spec.name),
            spec=spec,
            updated_by=updated_by,
            tenant=tenant,
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

    # ------------------------------------------------------------------------------------------ keys
    async def store_key(self, issued: IssuedKey) -> None:
        await self.bus.publish(self.topics.api_keys, issued.key_id, issued.record)
        self.keys.apply(issued.key_id, issued.record)  # read-your-writes: usable at once on this replica

    async def revoke_key(self, record: ApiKey, *, by: str) -> ApiKey:
        revoked = revoke(record, by=by)
        if revoked is not record:
            await self.bus.publish(self.topics.api_keys, record.key_id, revoked)
            self.keys.apply(record.key_id, revoked)
        return revoked
