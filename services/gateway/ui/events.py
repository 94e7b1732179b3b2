"""The console's server-sent events: which of a tenant's runs changed, as the gateway's run view folds their
events (``RunView.changed_since``: the tail of its change order, so a poll costs what changed, not the
10,000 runs kept).

One stream per open page. It says *which* runs changed, never what they hold: the page fetches its live
part again through the same authenticated, tenant-filtered route that rendered it, so an event cannot
carry anything the page could not show. The stream ends after ``AOETL_CONSOLE_STREAM_S`` and the browser's
EventSource reconnects by itself (``retry``): a gateway shutting down waits for no stream longer than that,
and a revoked key stops getting events at the next reconnection at the latest.

Polling the in-memory view (every ``POLL_S``) rather than waking on each change: a burst of batches of
one run is one event, and the bus's follower, which applies the records, never waits for a slow browser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

from fastapi import Request

from services.gateway.state import RunView

POLL_S: Final = 0.5
STREAM_S: Final = 30.0
KEEPALIVE_S: Final = 10.0
RECONNECT_MS: Final = 1000
MAX_IDS: Final = 100  # per event: a page shows at most 50 runs; more means "everything changed"


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def run_changes(
    request: Request, runs: RunView, tenant: str, run_id: str | None, *, stream_s: float = STREAM_S
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    cursor = runs.sequence
    started = quiet_since = loop.time()
    yield f"retry: {RECONNECT_MS}\n: connected\n\n"
    while loop.time() - started < stream_s:
        if await request.is_disconnected():
            return
        changed = runs.changed_since(cursor, tenant)
        cursor = runs.sequence
        if run_id is not None:
            changed = [r for r in changed if r == run_id]
        if changed:
            quiet_since = loop.time()
            yield sse("runs", {"runs": changed[:MAX_IDS]})
        elif loop.time() - quiet_since > KEEPALIVE_S:
            quiet_since = loop.time()
            yield ": keep-alive\n\n"  # a comment: proxies keep the connection, the page ignores it
        await asyncio.sleep(POLL_S)
