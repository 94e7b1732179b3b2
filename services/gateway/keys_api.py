"""``/auth``: who the caller is, and the API keys of the caller's tenant (admin only, ``access.RULES``).

An admin manages the keys of its own tenant only: another tenant's key is "not found" (its existence is
not revealed), creating one for another tenant is refused (403). Keys for a new tenant come from the
Kafka door (``aoetl auth keys create`` without ``--gateway``), which whoever runs the system holds. A new
key's secret is in the answer to its creation and nowhere else (``Cache-Control: no-store``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.access import principal_of
from services.gateway.audit import Auditor
from services.gateway.core import Gateway
from services.gateway.exceptions import GatewayTransientError
from shared.auth.keys import KEY_ID_PATTERN, issue_key
from shared.auth.roles import TENANT_PATTERN, Role
from shared.contracts import ApiKey
from shared.contracts.security import AuditOutcome


class WhoAmI(BaseModel):
    subject: str
    tenant: str
    role: Role
    method: str
    key_id: str | None


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    tenant: str | None = Field(None, pattern=TENANT_PATTERN, description="default: the caller's tenant")
    description: str | None = Field(None, max_length=200)


class KeyView(BaseModel):
    """An API key without its secret (or the secret's hash)."""

    key_id: str
    tenant: str
    role: Role
    created_at: datetime
    created_by: str
    description: str | None
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyView:
        return cls.model_validate(key.model_dump(exclude={"secret_sha256"}))


class NewKey(KeyView):
    key: str = Field(description="the key itself: shown this once, stored nowhere")


def add_auth_routes(app: FastAPI, gateway: Gateway, auditor: Auditor) -> None:
    """On the app itself rather than an included router, so they are plain routes of the app that the
    app-wide guard and the rule table see like every other."""

    @app.get("/auth/whoami", tags=["auth"], response_model=WhoAmI)
    async def whoami(request: Request) -> WhoAmI:
        p = principal_of(request)
        return WhoAmI(subject=p.subject, tenant=p.tenant, role=p.role, method=p.method, key_id=p.key_id)

    @app.get("/auth/keys", tags=["auth"], response_model=list[KeyView])
    async def list_keys(request: Request) -> list[KeyView]:
        tenant = principal_of(request).tenant
        return [KeyView.of(k) for k in gateway.keys.all() if k.tenant == tenant]

    @app.post(
        "/auth/keys", tags=["auth"], status_code=201, response_model=NewKey, responses={409: {}, 403: {}}
    )
    async def create_key(request: Request, body: KeyRequest) -> JSONResponse:
        principal = principal_of(request)
        tenant = body.tenant or principal.tenant
        if tenant != principal.tenant:
            raise await auditor.refuse(
                request,
                HTTPException(403, detail="an admin creates keys for its own tenant only"),
                outcome=AuditOutcome.DENIED,
            )
        if not gateway.settings.auth_api_keys:
            raise await auditor.refuse(request, HTTPException(409, detail="this gateway accepts no API keys"))
        issued = issue_key(tenant, body.role, created_by=principal.subject, description=body.description)
        await auditor.allow(request, f"key/{issued.key_id}")
        try:
            await gateway.store_key(issued)
        except GatewayTransientError as exc:
            raise await auditor.fail(request, exc, f"key/{issued.key_id}") from exc
        answer = NewKey(**KeyView.of(issued.record).model_dump(), key=issued.token)
        return JSONResponse(answer.model_dump(mode="json"), 201, headers={"Cache-Control": "no-store"})

    @app.delete("/auth/keys/{key_id}", tags=["auth"], response_model=KeyView, responses={404: {}})
    async def revoke_key(request: Request, key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)]) -> KeyView:
        principal = principal_of(request)
        await auditor.ready(request)
        record = gateway.keys.get(key_id)
        if record is None or record.tenant != principal.tenant:
            raise await auditor.refuse(request, HTTPException(404, detail=f"no API key {key_id!r}"))
        await auditor.allow(request)
        try:
            revoked = await gateway.revoke_key(record, by=principal.subject)
        except GatewayTransientError as exc:
            raise await auditor.fail(request, exc) from exc
        return KeyView.of(revoked)
