"""The HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Status codes, and what they promise:

* 202: a new ``PipelineRequest`` is on Kafka (acknowledged by every in-sync replica) — never earlier;
* 200 with ``duplicate: true``: a replay; the same run id as the first delivery, nothing published;
* 400 malformed or over-deep JSON (``shared.webhooks.payloads``) or no delivery id, 401
  bad/missing/stale signature, 404 unknown source or resource, 409 a copy of a webhook delivery first
  seen longer ago than its source's replay window, 413 body over the limit (checked from Content-Length
  and again while streaming, so a large body is refused before it is read), 422 invalid spec (field paths
  and reasons), a definition the spec policy refuses included (``shared.policy``: data roots, SQL, system
  tables and topics, connections, egress);
* 503: Kafka did not acknowledge in time, or the gateway has not caught up with its topics yet; the
  sender should retry (webhook senders do), and the retry is deduplicated.

Every rejection happens before anything is published.
"""

from __future__ import annotations

import getpass
import logging
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.core import Gateway, RunAnswer, WebhookAnswer
from services.gateway.exceptions import GatewayTransientError, PayloadError, ReplayRefusedError
from services.gateway.metrics import WEBHOOKS
from services.gateway.state import RunStatusView
from shared.contracts import PipelineDefinition
from shared.metrics import render
from shared.policy import check_spec, check_triggers, load_policy
from shared.spec import SpecError, parse_spec
from shared.spec.models import PIPELINE_NAME
from shared.triggers import split_definition_document
from shared.webhooks.signatures import SignatureError

_log = logging.getLogger(__name__)

SOURCE_NAME = r"^[A-Za-z0-9_\-]{1,64}$"
USER_HEADER = "X-Aoetl-User"


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


def _invalid(issues: list[Issue]) -> HTTPException:
    return HTTPException(422, detail=[i.model_dump() for i in issues])


def _unavailable(exc: GatewayTransientError) -> HTTPException:
    return HTTPException(503, detail=str(exc), headers={"Retry-After": "1"})


def create_app(gateway: Gateway) -> FastAPI:
    policy = load_policy()  # read at start-up: a bad AOETL_POLICY_* value stops the gateway there
    app = FastAPI(
        title="aoetl gateway",
        version="1",
        summary="Webhooks, pipeline definitions and runs, onto Kafka",
        responses={503: {"model": Problem, "description": "Kafka unavailable or not caught up; retry"}},
    )

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
    async def webhook(source: Annotated[str, Path(pattern=SOURCE_NAME)], request: Request) -> JSONResponse:
        config = gateway.source(source)
        if config is None:
            WEBHOOKS.labels("-", "unknown_source").inc()
            raise HTTPException(404, detail=f"no webhook source named {source!r}")
        try:
            body = await _read_limited(request, gateway.settings.max_body_bytes)
        except HTTPException:
            WEBHOOKS.labels(source, "too_large").inc()
            raise
        try:
            delivery = gateway.read_delivery(source, config, body, request.headers)
        except SignatureError as exc:
            WEBHOOKS.labels(source, "bad_signature").inc()
            _log.warning("webhook %s rejected (%s): %s", source, exc.reason, exc)
            raise HTTPException(401, detail=f"signature rejected: {exc.reason}") from exc
        except PayloadError as exc:
            WEBHOOKS.labels(source, "bad_payload").inc()
            raise HTTPException(400, detail=str(exc)) from exc
        try:
            require_ready()
            answer = await gateway.accept(delivery)
        except ReplayRefusedError as exc:
            WEBHOOKS.labels(source, "replayed").inc()
            _log.warning("webhook %s refused: %s", source, exc)
            raise HTTPException(409, detail=str(exc)) from exc
        except GatewayTransientError as exc:
            WEBHOOKS.labels(source, "unavailable").inc()
            raise _unavailable(exc) from exc
        except HTTPException:
            WEBHOOKS.labels(source, "unavailable").inc()
            raise
        outcome = "accepted" if answer.published else ("duplicate" if answer.duplicate else "ignored")
        WEBHOOKS.labels(source, outcome).inc()
        return JSONResponse(answer.model_dump(mode="json"), status_code=202 if answer.published else 200)

    # ------------------------------------------------------------------------------- definitions
    @app.get("/definitions", tags=["definitions"], response_model=list[PipelineDefinition])
    async def list_definitions() -> list[PipelineDefinition]:
        require_ready()
        return gateway.catalog.all()

    @app.get(
        "/definitions/{name}",
        tags=["definitions"],
        response_model=PipelineDefinition,
        responses={404: {"model": Problem}},
    )
    async def get_definition(name: Annotated[str, Path(pattern=PIPELINE_NAME)]) -> PipelineDefinition:
        require_ready()
        definition = gateway.catalog.get(name)
        if definition is None:
            raise HTTPException(404, detail=f"no definition named {name!r}")
        return definition

    @app.put(
        "/definitions/{name}",
        tags=["definitions"],
        response_model=PipelineDefinition,
        responses={201: {"model": PipelineDefinition}, 422: {"model": Problem}},
    )
    async def put_definition(
        name: Annotated[str, Path(pattern=PIPELINE_NAME)],
        spec_json: Annotated[
            dict[str, Any],
            Body(
                description="the pipeline spec (as `aoetl validate` takes), optionally with a top-level"
                " `triggers` list of webhook and topic rules"
            ),
        ],
        user: Annotated[str | None, Header(alias=USER_HEADER)] = None,
    ) -> JSONResponse:
        try:
            spec_part, triggers = split_definition_document(spec_json)
        except SpecError as exc:
            raise _invalid([Issue(path=i.path, reason=i.reason) for i in exc.issues]) from exc
        spec = _parse_spec_or_422(spec_part)
        if spec.name != name:
            raise _invalid([Issue(path="name", reason=f"must equal the URL's name {name!r}")])
        # the tenant is 'default' until principals carry one
        refused = check_spec(spec, policy) + check_triggers(triggers, policy)
        if refused:
            raise _invalid([Issue(path=i.path, reason=i.reason) for i in refused])
        require_ready()
        try:
            definition, changed = await gateway.put_definition(spec, user or "api", triggers)
        except GatewayTransientError as exc:
            raise _unavailable(exc) from exc
        status = 201 if changed and definition.version == 1 else 200
        return JSONResponse(definition.model_dump(mode="json"), status_code=status)

    @app.delete(
        "/definitions/{name}", tags=["definitions"], status_code=204, responses={404: {"model": Problem}}
    )
    async def delete_definition(name: Annotated[str, Path(pattern=PIPELINE_NAME)]) -> Response:
        require_ready()
        try:
            deleted = await gateway.delete_definition(name)
        except GatewayTransientError as exc:
            raise _unavailable(exc) from exc
        if not deleted:
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
        submission: RunSubmission,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
        user: Annotated[str | None, Header(alias=USER_HEADER)] = None,
    ) -> JSONResponse:
        if (submission.spec is None) == (submission.definition is None):
            raise _invalid([Issue(path="", reason="give exactly one of 'spec' or 'definition'")])
        spec = _parse_spec_or_422(submission.spec, prefix="spec") if submission.spec is not None else None
        require_ready()
        if submission.definition is not None and gateway.catalog.get(submission.definition) is None:
            raise _invalid(
                [Issue(path="definition", reason=f"no definition named {submission.definition!r}")]
            )
        try:
            answer = await gateway.submit(
                spec=spec,
                definition=submission.definition,
                parameters=submission.parameters,
                payload=submission.payload,
                requested_by=user or f"api:{getpass.getuser()}",
                idempotency_key=idempotency_key,
            )
        except GatewayTransientError as exc:
            raise _unavailable(exc) from exc
        return JSONResponse(answer.model_dump(mode="json"), status_code=200 if answer.duplicate else 202)

    @app.get(
        "/runs/{run_id}", tags=["runs"], response_model=RunStatusView, responses={404: {"model": Problem}}
    )
    async def get_run(run_id: str) -> RunStatusView:
        view = gateway.runs.get(run_id)
        if view is None:
            require_ready()  # not yet caught up: "unknown" might only mean "not read yet"
            raise HTTPException(404, detail=f"no recent run {run_id!r}")
        return view

    return app


def _parse_spec_or_422(data: Any, *, prefix: str = "") -> Any:
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise _invalid(
            [Issue(path=".".join(p for p in (prefix, i.path) if p), reason=i.reason) for i in exc.issues]
        ) from exc


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit``: from Content-Length before
    reading anything, else while streaming (chunked bodies carry no length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, detail="Content-Length is not a number")
        if int(declared) > limit:
            raise HTTPException(413, detail=f"body larger than {limit} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise HTTPException(413, detail=f"body larger than {limit} bytes")
    return bytes(received)
