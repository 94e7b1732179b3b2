"""Accepting a verified webhook delivery: its runs start at most once, whichever copy arrives where.

Every copy goes through the shared replay memory (``services.gateway.deliveries``): a copy nobody
remembers is *claimed* on the deliveries topic, and the replica whose claim is first in the log requests
the claim's runs, then records it STARTED. Every other copy is answered from the first claim: as a
duplicate (200, the same run ids) within its source's ``replay_window_s``, refused (409,
``ReplayRefusedError``) after it, so a captured delivery replayed later never starts a second run, after a
restart or at another replica.

An unfinished claim (its attempt gave up: Kafka did not acknowledge in time and the sender got a 503) is
taken over by the sender's retry with the claim's own run ids: at once when the failed attempt was this
process's, after ``attempt_s`` plus ``CLOCK_SKEW_S`` when another replica's attempt may still be running
(503 until then). The requests ledger skips run ids already acknowledged, so a takeover never requests a
run twice.

The answer waits for three Kafka round trips, not four: the claim, reading it back, the runs' requests.
The STARTED record is written after the answer (``DeliveryBook.record_started``; a stopping gateway
waits for those still on their way): it is what lets a copy elsewhere be answered at once, not what keeps
a run from starting twice (the ledger is), so a STARTED record lost with a crash costs a copy's sender
one takeover wait, never a second run.

A delivery is its source's tenant's (``WebhookSource.tenant``): only the trigger rules of the settings and of
that tenant's definitions are matched against it, and the runs it starts are that tenant's, so a sender
of one tenant can never start another tenant's definition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from services.gateway.bus import Bus
from services.gateway.configuration import GatewaySettings
from services.gateway.deliveries import DeliveryBook, Remembered
from services.gateway.exceptions import GatewayTransientError, ReplayRefusedError
from services.gateway.webhooks import Delivery
from shared.contracts import (
    DeliveryRun,
    DeliveryState,
    PipelineRequest,
    Trigger,
    TriggerKind,
    WebhookDelivery,
    new_id,
    utcnow,
)
from shared.triggers import TriggerRule, match_rules

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


@dataclass
class DeliveryAcceptor:
    """One gateway's side of the replay memory. ``rules`` gives the trigger rules in force for a tenant
    (the settings' first, then that tenant's registered definitions'); ``publish_request`` publishes a
    request unless its run id was already acknowledged (True when it published); ``topic`` is the
    deliveries topic (``GatewayTopics.deliveries``)."""

    settings: GatewaySettings
    bus: Bus
    book: DeliveryBook
    rules: Callable[[str], Sequence[TriggerRule]]
    publish_request: Callable[[PipelineRequest], Awaitable[bool]]
    topic: str

    @property
    def attempt_s(self) -> float:
        return ATTEMPT_SEND_TIMEOUTS * self.settings.send_timeout_s

    def tenant_of(self, delivery: Delivery) -> str:
        """Whose delivery it is: its source's tenant's."""
        return self.settings.webhooks[delivery.source].tenant

    async def accept(self, delivery: Delivery) -> WebhookAnswer:
        """Start the delivery's runs (one per matching trigger rule and definition) unless a copy did:
        answered as a duplicate within the source's replay window, ``ReplayRefusedError`` after it."""
        async with self.book.turn(delivery.key):
            try:
                async with asyncio.timeout(self.attempt_s):
                    return await self._accept_in_turn(delivery)
            except TimeoutError as exc:
                raise GatewayTransientError(f"accepting the delivery took over {self.attempt_s:g}s") from exc

    async def _accept_in_turn(self, delivery: Delivery) -> WebhookAnswer:
        seen = self.book.get(delivery.key, time.time())
        mine = False
        if seen is None:
            seen, mine = await self._claim(delivery)
        age = time.time() - seen.first_seen
        window = self.settings.webhooks[delivery.source].replay_window_s
        if not mine and age > window:
            raise ReplayRefusedError(delivery.source, seen.first_seen, window)
        if seen.started:
            return _answer(delivery, seen, published=[False] * len(seen.runs))
        if not mine and not self.book.abandoned_here(seen.claim_id):
            # Another replica's attempt may still be running: give it its time before taking over.
            takeover_at = seen.first_seen + self.attempt_s + CLOCK_SKEW_S
            wait_s = min(takeover_at - time.time(), self.settings.send_timeout_s)
            if await self.book.wait_started(delivery.key, wait_s):
                return _answer(delivery, seen, published=[False] * len(seen.runs))
            if time.time() < takeover_at:
                raise GatewayTransientError("another replica is accepting a copy of this delivery; retry")
            if age > self.settings.history_s:
                # The requests history no longer says whether its runs were requested: never risk a
                # second run of an old claim.
                return _answer(delivery, seen, published=[False] * len(seen.runs))
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
        position = await self.bus.publish(self.topic, delivery.key, claim)
        self.book.claimed_here(claim.claim_id)
        await self.bus.caught_up_to(position)
        self.book.apply(claim)  # a no-op once the follower has read it; feeds a follower-less bus
        seen = self.book.get(delivery.key, time.time()) or Remembered.of(claim)
        return seen, seen.claim_id == claim.claim_id

    def _plan(self, delivery: Delivery) -> list[DeliveryRun]:
        runs: list[DeliveryRun] = []
        seen: set[str] = set()
        rules = self.rules(self.tenant_of(delivery))
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
        tenant = self.tenant_of(delivery)
        for run in seen.runs:
            request = PipelineRequest(
                run_id=run.run_id,
                requested_by=f"webhook:{delivery.source}",
                tenant=tenant,
                trigger=Trigger(
                    kind=TriggerKind.WEBHOOK, source=delivery.source, delivery_id=seen.delivery_id
                ),
                definition_name=run.definition,
                parameters=run.parameters,
                payload=delivery.body,
            )
            published.append(await self.publish_request(request))
        started = WebhookDelivery(
            source=delivery.source,
            identity=delivery.identity,
            claim_id=seen.claim_id,
            state=DeliveryState.STARTED,
            delivery_id=seen.delivery_id,
            event=seen.event,
            first_seen_at=datetime.fromtimestamp(seen.first_seen, UTC),
            runs=list(seen.runs),
        )
        # Answered without waiting for the STARTED record: the runs' requests are acknowledged, which is
        # what the answer promises. The record only spares a copy at another replica (or after a restart)
        # the takeover wait; if it never lands, the takeover finds every run id in the requests ledger
        # and requests nothing again. This replica knows it at once.
        self.book.apply(started)
        self.book.record_started(started.claim_id, self.bus.publish(self.topic, delivery.key, started))
        return _answer(delivery, seen, published=published)


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
