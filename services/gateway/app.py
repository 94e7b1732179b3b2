"""The HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Status codes, and what they promise:

* 202: a new ``PipelineRequest`` is on Kafka (acknowledged by every in-sync replica) — never earlier;
* 200 with ``duplicate: true``: a replay; the same run id as the first delivery, nothing published;
* 400 malformed or over-deep JSON (``shared.webhooks.payloads``) or no delivery id, 401
  bad/missing/stale signature (webhooks) or no valid bearer token (every other endpoint but the probes;
  ``access.py``), 403 a role that does not allow the call, 404 unknown source or resource, 409 a copy of a
  webhook delivery first seen longer ago than its source's replay window, 413 body over the limit
  (checked from Content-Length and again while streaming, so a large body is refused before it is read;
  ``limits.py``), 422 invalid spec (field paths and reasons), a definition the spec policy refuses for the
  caller's tenant included (``shared.policy``: data roots, SQL, system tables and topics, connections,
  egress), 429 the principal's rate limit (Retry-After);
* 503: Kafka did not acknowledge in time, or the gateway has not caught up with its topics yet; the
  sender should retry (webhook senders do), and the retry is deduplicated.

Tenants: a principal sees and changes its own tenant's definitions and runs only; another tenant's are 404
(their existence is not revealed), and a definition name another tenant holds is 409. The lists (runs,
alerts, dead letters: ``records_api.py``; results: ``results_api.py``) hold the caller's tenant's records
only.

The web console (``/ui``, ``services.gateway.ui``) is served by the same app, behind the same rules.

Every rejection happens before anything is published. Every mutating call by a principal is audited
(``audit.py``): its ALLOWED record is on Kafka before the action is taken, a refusal's before the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.access import Authenticator, install_openapi_security, make_guard, principal_of
from services.gateway.audit import Auditor
from services.gateway.core import Gateway, RunAnswer, WebhookAnswer, api_run_id
from services.gateway.exceptions import GatewayTransientError
from services.gateway.keys_api import add_auth_routes
from services.gateway.limits import BodyLimit, RequestId
from services.gateway.metrics import HttpMetrics
from services.gateway.records_api import RUN_ID, add_record_routes
from services.gateway.results_api import add_result_routes
from services.gateway.state import RunStatusView
from services.gateway.ui.routes import add_console_routes
from services.gateway.webhook_route import SOURCE_NAME, answer_webhook, install_fast_path
from shared.auth.ratelimit import RateLimiter
from shared.contracts import PipelineDefinition
from shared.metrics import render
from shared.policy import check_spec, check_triggers, load_policy
from shared.spec import SpecError, parse_spec
from shared.spec.models import PIPELINE_NAME
from shared.tracing.ingress import instrument_app
from shared.triggers import split_definition_document

_log = logging.getLogger(__name__)


class Issue(BaseModel):
    path: str
    reason: str


class Problem(BaseModel):
    detail: str | list[Issue]


class RunSubmission(BaseModel):
    """Exactly one of ``spec`` (an inline pipeline spec) or ``definition`` (a registered name)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] | None = None
    definition: str | None = Field(None, pattern=PIPELINE_NAME)
    parameters: dict[str, str] = Field(default_factory=dict)
    payload: Any = Field(None, description="JSON records for a spec whose source is 'event'")


class ReadyAnswer(BaseModel):
    ready: bool
    checks: dict[str, bool]


class StopAnswer(BaseModel):
    run_id: str
    request_id: str


def _invalid(issues: list[Issue]) -> HTTPException:
    return HTTPException(422, detail=[i.model_dump() for i in issues])


def create_app(
    gateway: Gateway, *, clock: Callable[[], float] = time.monotonic, fast_webhooks: bool = True
) -> FastAPI:
    """The API. ``fast_webhooks=False`` keeps webhooks on the app's own way (``webhook_route``; a test
    compares the two)."""
    policy = load_policy()  # read at start-up: a bad AOETL_POLICY_* value stops the gateway there
    s = gateway.settings
    auditor = Auditor(gateway.bus, gateway.topics.audit)
    authenticator = Authenticator(gateway.keys if s.auth_api_keys else None, gateway.oidc)
    guard = make_guard(
        authenticator,
        RateLimiter(s.rate_limit_per_s, s.rate_limit_burst, clock=clock),
        metrics_public=s.metrics_public,
        on_denied=auditor.denied,
    )
    app = FastAPI(
        title="aoetl gateway",
        version="1",
        summary="Webhooks, pipeline definitions and runs, onto Kafka",
        responses={503: {"model": Problem, "description": "Kafka unavailable or not caught up; retry"}},
        dependencies=[Depends(guard)],
    )
    app.add_middleware(BodyLimit, limit=s.api_max_body_bytes, exempt_prefixes=("/webhooks/",))
    app.add_middleware(RequestId)  # even a 413 carries the request id
    app.add_middleware(HttpMetrics)  # outermost: every answer counted and timed
    traced = instrument_app(app)  # with tracing on: a span per request, continuing the caller's traceparent
    install_openapi_security(app, metrics_public=s.metrics_public)

    # Every object belongs to a tenant; another tenant's is answered as if it did not exist (404), so
    # not even its existence is revealed. Only a definition's name is shared by all tenants (the key of
    # the compacted topic): taking a name another tenant holds is refused (409).
    def own_definition(request: Request, name: str) -> PipelineDefinition | None:
        definition = gateway.catalog.get(name)
        return definition if definition and definition.tenant == principal_of(request).tenant else None

    def own_run(request: Request, run_id: str) -> RunStatusView | None:
        view = gateway.runs.get(run_id)
        return view if view and view.tenant == principal_of(request).tenant else None

    def require_ready() -> None:
        if not gateway.bus.ready:
            raise HTTPException(
                503, detail="not connected to Kafka or not caught up yet", headers={"Retry-After": "1"}
            )

    # ----------------------------------------------------------------------------------- probes
    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], response_model=ReadyAnswer)
    async def ready() -> JSONResponse:
        checks = {"kafka": gateway.bus.ready}
        if s.auth_api_keys:
            checks["api_keys"] = gateway.keys.is_fresh()
        return JSONResponse(
            {"ready": all(checks.values()), "checks": checks}, 200 if all(checks.values()) else 503
        )

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    # ---------------------------------------------------------------------------------- webhooks
    @app.post(
        "/webhooks/{source}",
        tags=["webhooks"],
        status_code=202,
        response_model=WebhookAnswer,
        responses={
            200: {"model": WebhookAnswer, "description": "a replay, or no trigger rule matched"},
            400: {"model": Problem},
            401: {"model": Problem},
            404: {"model": Problem},
            409: {"model": Problem, "description": "a replay after the source's replay window"},
            413: {"model": Problem},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def webhook(source: Annotated[str, Path(pattern=SOURCE_NAME)], request: Request) -> Response:
        return await answer_webhook(gateway, source, request, require_ready)

    # with tracing on, every request takes the app's way: its span must not be skipped
    if fast_webhooks and not traced:
        install_fast_path(app, lambda name, request: answer_webhook(gateway, name, request, require_ready))

    # ------------------------------------------------------------------------------- definitions
    @app.get("/definitions", tags=["definitions"], response_model=list[PipelineDefinition])
    async def list_definitions(request: Request) -> list[PipelineDefinition]:
        require_ready()
        return gateway.catalog.of_tenant(principal_of(request).tenant)

    @app.get(
        "/definitions/{name}",
        tags=["definitions"],
        response_model=PipelineDefinition,
        responses={404: {"model": Problem}},
    )
    async def get_definition(
        request: Request, name: Annotated[str, Path(pattern=PIPELINE_NAME)]
    ) -> PipelineDefinition:
        require_ready()
        definition = own_definition(request, name)
        if definition is None:
            raise HTTPException(404, detail=f"no definition named {name!r}")
        return definition

    @app.put(
        "/definitions/{name}",
        tags=["definitions"],
        response_model=PipelineDefinition,
        responses={
            201: {"model": PipelineDefinition},
            409: {"model": Problem, "description": "another tenant holds the name"},
            422: {"model": Problem},
        },
    )
    async def put_definition(
        request: Request,
        name: Annotated[str, Path(pattern=PIPELINE_NAME)],
        spec_json: Annotated[
            dict[str, Any],
            Body(
                description="the pipeline spec (as `aoetl validate` takes), optionally with a top-level"
                " `triggers` list of webhook and topic rules"
            ),
        ],
    ) -> JSONResponse:
        try:
            spec_part, triggers = split_definition_document(spec_json)
        except SpecError as exc:
            issues = [Issue(path=i.path, reason=i.reason) for i in exc.issues]
            raise await auditor.refuse(request, _invalid(issues)) from None
        try:
            spec = _parse_spec_or_422(spec_part)
            if spec.name != name:
                raise _invalid([Issue(path="name", reason=f"must equal the URL's name {name!r}")])
            # the caller's tenant: the connections a spec may name are declared per tenant
            tenant = principal_of(request).tenant
            refused = check_spec(spec, policy, tenant=tenant) + check_triggers(triggers, policy)
            if refused:
                raise _invalid([Issue(path=i.path, reason=i.reason) for i in refused])
        except HTTPException as exc:
            raise await auditor.refuse(request, exc) from None
        await auditor.ready(request)
        principal = principal_of(request)
        held = gateway.catalog.get(name)
        if held is not None and held.tenant != principal.tenant:
            taken = HTTPException(409, detail=f"the name {name!r} is taken; choose another")
            raise await auditor.refuse(request, taken)
        await auditor.allow(request)
        try:
            definition, changed = await gateway.put_definition(
                spec, principal.label, triggers, principal.tenant
            )
        except GatewayTransientError as exc:
            raise await auditor.fail(request, exc) from exc
        status = 201 if changed and definition.version == 1 else 200
        return JSONResponse(definition.model_dump(mode="json"), status_code=status)

    @app.delete(
        "/definitions/{name}", tags=["definitions"], status_code=204, responses={404: {"model": Problem}}
    )
    async def delete_definition(
        request: Request, name: Annotated[str, Path(pattern=PIPELINE_NAME)]
    ) -> Response:
        await auditor.ready(request)
        if own_definition(request, name) is None:
            raise await auditor.refuse(request, HTTPException(404, detail=f"no definition named {name!r}"))
        await auditor.allow(request)
        try:
            deleted = await gateway.delete_definition(name)
        except GatewayTransientError as exc:
            raise await auditor.fail(request, exc) from exc
        if not deleted:  # deleted meanwhile by another call: the same end state
            raise HTTPException(404, detail=f"no definition named {name!r}")
        return Response(status_code=204)

    # -------------------------------------------------------------------------------------- runs
    @app.post(
        "/runs",
        tags=["runs"],
        status_code=202,
        response_model=RunAnswer,
        responses={
            200: {"model": RunAnswer, "description": "replay of an Idempotency-Key"},
            422: {"model": Problem},
        },
    )
    async def submit_run(
        request: Request,
        submission: RunSubmission,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    ) -> JSONResponse:
        try:
            if (submission.spec is None) == (submission.definition is None):
                raise _invalid([Issue(path="", reason="give exactly one of 'spec' or 'definition'")])
            spec = _parse_spec_or_422(submission.spec, prefix="spec") if submission.spec is not None else None
        except HTTPException as exc:
            raise await auditor.refuse(request, exc) from None
        await auditor.ready(request)
        if submission.definition is not None and own_definition(request, submission.definition) is None:
            unknown = Issue(path="definition", reason=f"no definition named {submission.definition!r}")
            raise await auditor.refuse(request, _invalid([unknown]))
        run_id = api_run_id(idempotency_key)
        await auditor.allow(request, f"run/{run_id}")
        try:
            answer = await gateway.submit(
                spec=spec,
                definition=submission.definition,
                parameters=submission.parameters,
                payload=submission.payload,
                requested_by=principal_of(request).label,
                idempotency_key=idempotency_key,
                run_id=run_id,
                tenant=principal_of(request).tenant,
            )
        except GatewayTransientError as exc:
            raise await auditor.fail(request, exc, f"run/{run_id}") from exc
        return JSONResponse(answer.model_dump(mode="json"), status_code=200 if answer.duplicate else 202)

    @app.get(
        "/runs/{run_id}", tags=["runs"], response_model=RunStatusView, responses={404: {"model": Problem}}
    )
    async def get_run(request: Request, run_id: Annotated[str, Path(pattern=RUN_ID)]) -> RunStatusView:
        view = own_run(request, run_id)
        if view is None:
            require_ready()  # not yet caught up: "unknown" might only mean "not read yet"
            raise HTTPException(404, detail=f"no recent run {run_id!r}")
        return view

    @app.post(
        "/runs/{run_id}/stop",
        tags=["runs"],
        status_code=202,
        response_model=StopAnswer,
        responses={404: {"model": Problem}},
    )
    async def stop_run(request: Request, run_id: Annotated[str, Path(pattern=RUN_ID)]) -> JSONResponse:
        """Stop a run, as `aoetl stop` does: a continuous run's readers commit and leave; a one-shot run in
        progress is aborted. The run ends CANCELLED (see ``GET /runs/{run_id}``)."""
        await auditor.ready(request)
        if own_run(request, run_id) is None:
            raise await auditor.refuse(request, HTTPException(404, detail=f"no recent run {run_id!r}"))
        await auditor.allow(request)
        try:
            principal = principal_of(request)
            stop = await gateway.stop(run_id, principal.label, principal.tenant)
        except GatewayTransientError as exc:
            raise await auditor.fail(request, exc) from exc
        return JSONResponse(StopAnswer(run_id=run_id, request_id=stop.request_id).model_dump(), 202)

    add_auth_routes(app, gateway, auditor)
    add_record_routes(app, gateway, auditor, require_ready)
    add_result_routes(app, gateway, require_ready)
    add_console_routes(app, gateway, auditor, authenticator, require_ready)
    return app


def _parse_spec_or_422(data: Any, *, prefix: str = "") -> Any:
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise _invalid(
            [Issue(path=".".join(p for p in (prefix, i.path) if p), reason=i.reason) for i in exc.issues]
        ) from exc
