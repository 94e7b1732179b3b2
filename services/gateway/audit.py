"""The gateway's audit records (``shared.auth.audit`` has the rule): one per mutating API call, on the
audit topic keyed by tenant, acknowledged by Kafka before the call is answered.

What an endpoint calls, in order:

* ``ready(request)``: the gateway must be caught up to decide anything; else 503 with a FAILED record
  (best effort: Kafka is probably what is missing);
* ``refuse(request, exc)`` before a 4xx: the REJECTED record, then ``exc``; when the record cannot be
  written the answer is 503 instead (every answer to a mutating call implies its record);
* ``allow(request)`` before acting: the ALLOWED record, or 503 and the action is not taken;
* ``fail(request, exc)`` when the allowed action could not be completed: a FAILED record, best effort,
  since the caller is answered 503 anyway.

``denied`` is the access guard's hook before a 403 (``access.make_guard``).
"""

from __future__ import annotations

import logging

from fastapi import HTTPException, Request

from services.gateway.access import Rule, object_of, principal_of, rule_of
from services.gateway.bus import Bus
from services.gateway.exceptions import GatewayTransientError, unavailable
from services.gateway.metrics import AUDIT_RECORDS
from shared.auth.audit import rest_record
from shared.contracts.security import AuditOutcome

_log = logging.getLogger(__name__)

NOT_READY = "not connected to Kafka or not caught up yet"


class Auditor:
    def __init__(self, bus: Bus, topic: str):
        self.bus = bus
        self.topic = topic

    async def ready(self, request: Request, object: str | None = None) -> None:
        if not self.bus.ready:
            await self._best_effort(request, AuditOutcome.FAILED, object, NOT_READY)
            raise HTTPException(503, detail=NOT_READY, headers={"Retry-After": "1"})

    async def refuse(
        self,
        request: Request,
        exc: HTTPException,
        object: str | None = None,
        *,
        outcome: AuditOutcome = AuditOutcome.REJECTED,
    ) -> HTTPException:
        try:
            await self._write(request, outcome, object, summary(exc))
        except GatewayTransientError as write_failed:
            return unavailable(write_failed)
        return exc

    async def allow(self, request: Request, object: str | None = None) -> None:
        await self.ready(request, object)
        try:
            await self._write(request, AuditOutcome.ALLOWED, object, None)
        except GatewayTransientError as exc:
            raise unavailable(exc) from exc

    async def fail(
        self, request: Request, exc: GatewayTransientError, object: str | None = None
    ) -> HTTPException:
        await self._best_effort(request, AuditOutcome.FAILED, object, str(exc))
        return unavailable(exc)

    async def denied(self, request: Request, rule: Rule, reason: str) -> None:
        try:
            await self._write(request, AuditOutcome.DENIED, None, reason, rule=rule)
        except GatewayTransientError as exc:
            raise unavailable(exc) from exc

    async def _best_effort(
        self, request: Request, outcome: AuditOutcome, object: str | None, reason: str
    ) -> None:
        try:
            await self._write(request, outcome, object, reason)
        except GatewayTransientError:
            _log.error(
                "could not write the %s audit record of request %s", outcome.value, request.state.request_id
            )

    async def _write(
        self,
        request: Request,
        outcome: AuditOutcome,
        object: str | None,
        reason: str | None,
        *,
        rule: Rule | None = None,
    ) -> None:
        rule = rule or rule_of(request)
        if rule is None or rule.action is None:
            raise RuntimeError(f"{request.method} {request.url.path} is audited but its rule names no action")
        principal = principal_of(request)
        record = rest_record(
            principal,
            request_id=request.state.request_id,
            action=rule.action,
            object=object or object_of(request, rule),
            outcome=outcome,
            reason=reason,
        )
        try:
            await self.bus.publish(self.topic, principal.tenant, record)
        except GatewayTransientError:
            AUDIT_RECORDS.labels("write_failed").inc()
            raise
        AUDIT_RECORDS.labels(outcome.value).inc()


def summary(exc: HTTPException) -> str:
    """A refusal's reason for its audit record: the field paths of spec issues, never their reasons or
    values (a spec may carry anything, and audit records are read by other people)."""
    if isinstance(exc.detail, list):
        paths = sorted({str(i.get("path") or "(spec)") for i in exc.detail if isinstance(i, dict)})
        return f"{exc.status_code}: invalid at {', '.join(paths)}"[:500]
    return f"{exc.status_code}: {exc.detail}"[:500]
