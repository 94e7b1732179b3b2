"""``GET /results?cursor=&limit=`` (viewer and up, ``access.RULES``): the caller's tenant's pipeline results,
read from the results topic itself, so a CLI whose broker is out of reach can list and follow them
(``aoetl results [--follow]`` over REST).

**Cursor.** ``partition:offset,...``, the next offset to read of each partition (a partition it does not
name is read from its beginning); empty: from the beginning of the topic (what retention kept); ``end``:
nothing now, only the cursor of the topic's end, to follow from. Each answer has ``results``,
``next_cursor`` (pass it back for what comes after) and ``more`` (records past the page were on the topic
already: ask again at once; false: wait before asking). The cursor moves past other tenants' results
too, so following costs the same whoever else writes.

**Whose result.** A result is its run's tenant's: the run's request is the authority (``RunView.tenant_of``).
The topics are followed side by side, so a result can be read before its request; then the answer waits,
on the view's condition (``RunView.tenant_within``), not polling, for the request to be read, at most
``AOETL_RESULTS_TENANT_GRACE_S`` seconds over the whole request (30 by default), so one page never hangs.
A run started before what the gateway reads back (``AOETL_HISTORY_S``) is not waited for: its request will
never be read. A result whose run is still unknown after that goes to the tenant it names itself, the
orchestrator's copy of its request's tenant (``default`` before PipelineResult carried one): neither shown
to another tenant nor silently dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from services.gateway.access import principal_of
from services.gateway.core import Gateway
from services.gateway.exceptions import GatewayTransientError, unavailable
from shared.contracts import PipelineResult
from shared.kafka.topics import Topics

MAX_PAGE = 500
CURSOR = r"^(end|\d{1,6}:\d{1,19}(,\d{1,6}:\d{1,19})*)?$"


class ResultPage(BaseModel):
    results: list[PipelineResult]
    next_cursor: str = Field(description="pass back as ?cursor= for what comes after")
    more: bool = Field(description="more records were on the topic already: ask again without waiting")


def parse_cursor(cursor: str) -> dict[int, int] | Literal["end"] | None:
    if cursor == "end":
        return "end"
    if not cursor:
        return None
    positions: dict[int, int] = {}
    for part in cursor.split(","):
        partition, _, offset = part.partition(":")
        positions[int(partition)] = int(offset)
    return positions


def format_cursor(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def add_result_routes(app: FastAPI, gateway: Gateway, require_ready: Callable[[], None]) -> None:
    topic = gateway.settings.topic(Topics.RESULTS)

    @app.get("/results", tags=["records"], response_model=ResultPage)
    async def list_results(
        request: Request,
        cursor: Annotated[
            str, Query(pattern=CURSOR, max_length=30_000, description="partition:offset,... ; empty; end")
        ] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="records read at most")] = 100,
    ) -> ResultPage:
        require_ready()
        tenant = principal_of(request).tenant
        try:
            page = await gateway.bus.read_page(topic, parse_cursor(cursor), limit, PipelineResult)
        except GatewayTransientError as exc:
            raise unavailable(exc) from exc
        if not page.ends:
            raise HTTPException(
                503, detail="the results topic has no partitions yet", headers={"Retry-After": "1"}
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + gateway.settings.results_tenant_grace_s
        # a run started before what the follower reads back: its request will never be read, no waiting
        read_back_from = datetime.now(UTC) - timedelta(seconds=gateway.settings.history_s)
        mine: list[PipelineResult] = []
        for record in page.records:
            result = record.value
            if not isinstance(result, PipelineResult):
                continue  # not a result the gateway can read: nobody's to show
            wait = max(deadline - loop.time(), 0.0) if result.started_at >= read_back_from else 0.0
            whose = await gateway.runs.tenant_within(result.run_id, wait)
            if (whose or result.tenant) == tenant:
                mine.append(result)
        return ResultPage(results=mine, next_cursor=format_cursor(page.positions), more=page.more)
