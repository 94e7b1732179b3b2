"""The webhook fast path (``services.gateway.webhook_route``) answers as the app's own way does: the same
status, body and X-Request-Id, the same HTTP metrics, and the requests it does not serve (another method,
a source name the route refuses) still reach the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from services.gateway.app import create_app
from tests.unit.gateway_support import FakeBus, make_gateway
from tests.unit.test_gateway_app import PUSH, github

pytestmark = pytest.mark.unit

ROUTE = "/webhooks/{source}"


def counted(status_class: str) -> float:
    labels = {"route": ROUTE, "method": "POST", "status_class": status_class}
    return REGISTRY.get_sample_value("aoetl_gateway_http_requests_total", labels) or 0.0


@pytest.fixture
async def clients() -> AsyncIterator[dict[bool, httpx.AsyncClient]]:
    """Two gateways alike, one answering webhooks the fast way (True), one the app's way (False)."""
    found: dict[bool, httpx.AsyncClient] = {}
    for fast in (True, False):
        transport = httpx.ASGITransport(app=create_app(make_gateway(FakeBus()), fast_webhooks=fast))
        found[fast] = httpx.AsyncClient(transport=transport, base_url="http://gateway")
    try:
        yield found
    finally:
        for client in found.values():
            await client.aclose()


CASES = [
    ("accepted", "/webhooks/github", github(PUSH)),
    ("unknown source", "/webhooks/nosuch", github(PUSH)),
    ("bad signature", "/webhooks/github", github(PUSH, secret="another-secret-of-16+bytes")),
    ("no delivery id", "/webhooks/github", {**github(PUSH), "X-GitHub-Delivery": " "}),
    ("a name the route refuses", "/webhooks/bad.name", github(PUSH)),
]


@pytest.mark.parametrize(("case", "path", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_the_fast_path_answers_as_the_app_does(
    clients: dict[bool, httpx.AsyncClient], case: str, path: str, headers: dict[str, str]
) -> None:
    request_id = "req-" + case.replace(" ", "-")
    answers = {}
    for fast, client in clients.items():
        before = {c: counted(c) for c in ("2xx", "4xx")}
        answer = await client.post(path, content=PUSH, headers={**headers, "X-Request-Id": request_id})
        after = {c: counted(c) - before[c] for c in ("2xx", "4xx")}
        answers[fast] = (answer.status_code, answer.json(), answer.headers.get("x-request-id"), after)
    assert answers[True] == answers[False]
    assert answers[True][2] == request_id


async def test_the_fast_path_gives_a_request_id_and_leaves_other_methods_to_the_app(
    clients: dict[bool, httpx.AsyncClient],
) -> None:
    answer = await clients[True].post("/webhooks/github", content=PUSH, headers=github(PUSH, delivery="d-9"))
    assert answer.status_code == 202 and len(answer.headers["x-request-id"]) == 32
    assert (await clients[True].get("/webhooks/github")).status_code == 405  # the app's routing answered
