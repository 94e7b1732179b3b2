"""The gateway's HTTP metrics, in process over a fake bus: every answer counted and timed by route
template, method and status class, never by raw path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from services.gateway.app import create_app
from services.gateway.metrics import HttpMetrics
from tests.unit.gateway_support import ADMIN, FakeBus, bearer, make_gateway

pytestmark = pytest.mark.unit


def requests(route: str, method: str, status_class: str) -> float:
    labels = {"route": route, "method": method, "status_class": status_class}
    return REGISTRY.get_sample_value("aoetl_gateway_http_requests_total", labels) or 0.0


def timed(route: str, method: str) -> float:
    labels = {"route": route, "method": method}
    return REGISTRY.get_sample_value("aoetl_gateway_http_request_duration_seconds_count", labels) or 0.0


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(make_gateway(FakeBus())))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=bearer(ADMIN)) as c:
        yield c


async def test_requests_are_labelled_by_route_template_method_and_status_class(
    client: httpx.AsyncClient,
) -> None:
    before = {
        "found": requests("/runs/{run_id}", "GET", "4xx"),
        "timed": timed("/runs/{run_id}", "GET"),
        "health": requests("/health", "GET", "2xx"),
        "unmatched": requests("unmatched", "GET", "4xx"),
        "other": requests("/definitions", "other", "4xx"),
        "unauthenticated": requests("/definitions", "GET", "4xx"),
    }
    for run_id in ("run-a", "run-b", "run-c"):  # unknown runs: 404, each its own path, one series
        assert (await client.get(f"/runs/{run_id}")).status_code == 404
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/no/such/path/7f3a")).status_code == 404
    assert (await client.request("BREW", "/definitions")).status_code == 405
    assert (await client.get("/definitions", headers={"Authorization": "Bearer nope"})).status_code == 401

    assert requests("/runs/{run_id}", "GET", "4xx") - before["found"] == 3
    assert timed("/runs/{run_id}", "GET") - before["timed"] == 3
    assert requests("/health", "GET", "2xx") - before["health"] == 1
    assert requests("unmatched", "GET", "4xx") - before["unmatched"] == 1
    assert requests("/definitions", "other", "4xx") - before["other"] == 1
    assert requests("/definitions", "GET", "4xx") - before["unauthenticated"] == 1
    routes = {
        sample.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "aoetl_gateway_http_requests"
        for sample in family.samples
    }
    assert not [route for route in routes if "run-a" in route or "7f3a" in route], routes


async def test_an_answer_a_middleware_gives_before_routing_still_has_its_route(
    client: httpx.AsyncClient,
) -> None:
    before = requests("/definitions/{name}", "PUT", "4xx")
    answer = await client.put(
        "/definitions/big", content=b"x" * 10_000, headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 413  # the body limit answers before the route runs
    assert requests("/definitions/{name}", "PUT", "4xx") - before == 1


async def test_an_escaping_exception_counts_as_a_5xx() -> None:
    app = FastAPI()

    @app.get("/boom/{n}")
    async def boom(n: int) -> None:
        raise RuntimeError("a bug")

    app.add_middleware(HttpMetrics)
    before = requests("/boom/{n}", "GET", "5xx")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/boom/1")).status_code == 500
    assert requests("/boom/{n}", "GET", "5xx") - before == 1
