"""Limits of the API (``services/gateway/limits.py``, the rate limit in ``access.py``): every endpoint
refuses an oversized body (413) before reading it all, and each principal has its own rate (429 with
Retry-After), on an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.access import RULES
from services.gateway.app import create_app
from tests.unit.gateway_support import ADMIN, GITHUB_SECRET, OPERATOR, FakeBus, bearer, make_gateway

pytestmark = pytest.mark.unit

API_LIMIT = 4096  # gateway_support.make_settings: api_max_body_bytes
WEBHOOK_LIMIT = 2048  # max_body_bytes

CONCRETE = {"{name}": "repo-sync", "{run_id}": "r1", "{key_id}": "0123456789abcdef", "{source}": "github"}


def concrete(path: str) -> str:
    for template, value in CONCRETE.items():
        path = path.replace(template, value)
    return path


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
async def client(bus: FakeBus) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_gateway(bus))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        yield c


@pytest.mark.parametrize("endpoint", sorted(RULES), ids=lambda k: f"{k[0]} {k[1]}")
async def test_every_endpoint_refuses_a_body_over_its_limit(
    client: httpx.AsyncClient, bus: FakeBus, endpoint: tuple[str, str]
) -> None:
    method, path = endpoint
    limit = WEBHOOK_LIMIT if path.startswith("/webhooks/") else API_LIMIT
    body = b"{" + b" " * limit + b"}"
    response = await client.request(method, concrete(path), content=body, headers=bearer(ADMIN))
    assert response.status_code == 413, response.text
    assert response.headers.get("x-request-id")
    assert bus.published == []
    just_fits = await client.request(method, concrete(path), content=b"{}", headers=bearer(ADMIN))
    assert just_fits.status_code != 413


async def test_a_streamed_body_is_cut_off_at_the_limit(client: httpx.AsyncClient, bus: FakeBus) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b" " * 1000

    response = await client.post("/runs", content=chunks(), headers=bearer(ADMIN))
    assert response.status_code == 413
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert bus.published == []
    bad = await client.post("/runs", content=b"{}", headers={**bearer(ADMIN), "Content-Length": "x"})
    assert bad.status_code in (400, 413)


async def test_each_principal_has_its_own_rate_with_retry_after(bus: FakeBus) -> None:
    now = [0.0]
    gateway = make_gateway(bus, rate_limit_per_s=0.5, rate_limit_burst=2)
    app = create_app(gateway, clock=lambda: now[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        assert [(await c.get("/definitions", headers=bearer(ADMIN))).status_code for _ in range(2)] == [
            200,
            200,
        ]
        limited = await c.get("/definitions", headers=bearer(ADMIN))
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        assert (await c.get("/definitions", headers=bearer(OPERATOR))).status_code == 200
        assert (await c.get("/health")).status_code == 200  # probes are not limited
        signed_ping = b'{"zen": "ok"}'
        import hashlib
        import hmac

        digest = hmac.new(GITHUB_SECRET.encode(), signed_ping, hashlib.sha256).hexdigest()
        hook = await c.post(
            "/webhooks/github",
            content=signed_ping,
            headers={
                "X-Hub-Signature-256": f"sha256={digest}",
                "X-GitHub-Delivery": "d",
                "X-GitHub-Event": "ping",
            },
        )
        assert hook.status_code == 200  # webhooks are not a principal's calls
        now[0] = 2.0
        assert (await c.get("/definitions", headers=bearer(ADMIN))).status_code == 200
        assert (await c.get("/definitions", headers=bearer(ADMIN))).status_code == 429
    assert bus.audits() == []  # reads are not audited, and nothing else was published
