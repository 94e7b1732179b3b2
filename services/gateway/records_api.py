"""Reading a tenant's records: ``GET /runs`` (its recent runs), ``GET /alerts``, ``GET /dead-letters`` and
``GET /dead-letters/{id}`` (viewer and up, ``access.RULES``), and re-driving one dead letter, ``POST
/dead-letters/{id}/replay`` (operator; audited as ``dlq.replay``; ``?dry_run=true`` says what would be
re-driven and where, and writes nothing), through the console's own path (``services.gateway.redrive``).

Every answer holds the caller's tenant's records only, whatever the caller's role: an admin of one tenant
sees nothing of another's, and a filter naming another tenant's run or pipeline simply matches nothing
(its existence is not revealed). What is listed is what the gateway's views keep, newest first: the runs
of its status view (``AOETL_RUNS_CAPACITY``, read ``AOETL_HISTORY_S`` back), the most recent alerts and
dead letters of each tenant (``AOETL_RECORDS_PER_TENANT``; ``services.gateway.records`` says whose each
record is). A list is answered 503 until the gateway has caught up with its topics, as definitions are.

One dead letter (``GET /dead-letters/{id}``) is the listed view plus its payload (base64), read back from
the dead-letters topic: another tenant's letter is 404 like an unknown one, a letter the view still lists
but the topic no longer has (retention) is 410.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from services.gateway import redrive
from services.gateway.access import principal_of
from services.gateway.audit import Auditor
from services.gateway.core import Gateway
from services.gateway.exceptions import GatewayTransientError, unavailable
from services.gateway.records import DeadLetterDetail, DeadLetterView
from services.gateway.state import RUNNING, SUBMITTED, RunStatusView
from shared.contracts import Alert, AlertKind, RunStatus
from shared.spec.models import PIPELINE_NAME

RUN_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
DEAD_LETTER_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
MAX_PAGE = 500

T = TypeVar("T")


class ListedStatus(StrEnum):
    """A run's status as ``GET /runs/{run_id}`` answers it: not finished yet, or its result's."""

    SUBMITTED = SUBMITTED
    RUNNING = RUNNING
    COMPLETED = RunStatus.COMPLETED.value
    FAILED = RunStatus.FAILED.value
    REJECTED = RunStatus.REJECTED.value
    TIMED_OUT = RunStatus.TIMED_OUT.value
    CANCELLED = RunStatus.CANCELLED.value


class Page(BaseModel):
    total: int = Field(description="records matching, over every page")
    limit: int
    offset: int


class RunPage(Page):
    runs: list[RunStatusView]


class AlertPage(Page):
    alerts: list[Alert]


class DeadLetterPage(Page):
    dead_letters: list[DeadLetterView]


class ReplayAnswer(BaseModel):
    """What was re-driven and where: the origin topic, and the record's partition and offset there (None in
    a dry run, which publishes nothing)."""

    dead_letter_id: str
    dry_run: bool
    topic: str
    key_base64: str | None
    payload_bytes: int
    partition: int | None
    offset: int | None


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="records per page")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="records to skip (newest first)")]
LetterId = Annotated[str, Path(pattern=DEAD_LETTER_ID)]
RunFilter = Annotated[str | None, Query(pattern=RUN_ID, description="only this run's")]


def _page(records: Sequence[T], limit: int, offset: int) -> dict[str, Any]:
    return {
        "total": len(records),
        "limit": limit,
        "offset": offset,
        "items": records[offset : offset + limit],
    }


def add_record_routes(
    app: FastAPI, gateway: Gateway, auditor: Auditor, require_ready: Callable[[], None]
) -> None:
    """On the app itself (like ``keys_api``), so the app-wide guard and the rule table see them."""

    @app.get("/runs", tags=["runs"], response_model=RunPage)
    async def list_runs(
        request: Request,
        pipeline: Annotated[
            str | None, Query(pattern=PIPELINE_NAME, description="only this pipeline's")
        ] = None,
        status: Annotated[ListedStatus | None, Query(description="only runs in this status")] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> RunPage:
        require_ready()
        tenant = principal_of(request).tenant
        chosen = status.value if status else None
        # only the page's runs are folded: 10,000 runs kept cost a sort, not 10,000 copies
        total, runs = gateway.runs.recent_page(
            tenant, pipeline=pipeline, status=chosen, offset=offset, limit=limit
        )
        return RunPage(runs=runs, total=total, limit=limit, offset=offset)

    @app.get("/alerts", tags=["records"], response_model=AlertPage)
    async def list_alerts(
        request: Request,
        run_id: RunFilter = None,
        kind: Annotated[AlertKind | None, Query(description="only alerts of this kind")] = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> AlertPage:
        require_ready()
        alerts = [
            a
            for a in gateway.records.alerts(principal_of(request).tenant)
            if (run_id is None or a.run_id == run_id) and (kind is None or a.kind is kind)
        ]
        page = _page(alerts, limit, offset)
        return AlertPage(alerts=page.pop("items"), **page)

    @app.get("/dead-letters", tags=["records"], response_model=DeadLetterPage)
    async def list_dead_letters(
        request: Request, run_id: RunFilter = None, limit: Limit = 50, offset: Offset = 0
    ) -> DeadLetterPage:
        require_ready()
        letters = [
            d
            for d in gateway.records.dead_letters(principal_of(request).tenant, gateway.runs.tenant_of)
            if run_id is None or d.run_id == run_id
        ]
        page = _page(letters, limit, offset)
        return DeadLetterPage(dead_letters=page.pop("items"), **page)

    @app.get("/dead-letters/{dead_letter_id}", tags=["records"], response_model=DeadLetterDetail)
    async def get_dead_letter(request: Request, dead_letter_id: LetterId) -> DeadLetterDetail:
        require_ready()
        view = redrive.own_letter(gateway, request, dead_letter_id)
        if view is None:
            raise HTTPException(404, detail=f"no dead letter {dead_letter_id!r}")
        try:
            letter = await redrive.read_letter(gateway.bus, gateway.settings, gateway.records, view)
        except redrive.LetterGone as exc:
            raise HTTPException(410, detail=str(exc)) from None
        except GatewayTransientError as exc:
            raise unavailable(exc) from exc
        return DeadLetterDetail.of_letter(letter, view.tenant)

    @app.post("/dead-letters/{dead_letter_id}/replay", tags=["records"], response_model=ReplayAnswer)
    async def replay_dead_letter(
        request: Request,
        dead_letter_id: LetterId,
        dry_run: Annotated[bool, Query(description="say what would be re-driven; write nothing")] = False,
    ) -> ReplayAnswer:
        done = await redrive.replay(gateway, auditor, request, dead_letter_id, dry_run=dry_run)
        where = done.position
        return ReplayAnswer(
            dead_letter_id=done.dead_letter_id,
            dry_run=done.dry_run,
            topic=done.topic,
            key_base64=done.key_base64,
            payload_bytes=done.payload_bytes,
            partition=where.partition if where else None,
            offset=where.offset if where else None,
        )
