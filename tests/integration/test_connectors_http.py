"""HTTP connector against a real HTTP server on 127.0.0.1 (``tests.support.json_http``): pagination styles,
retries with Retry-After, auth, rate limiting and error classification. Never touches the internet."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.connectors import (
    SourceNotFoundError,
    SourceReadError,
    SourceUnavailableError,
    http_api,
    plan_splits,
    read_split,
)
from shared.contracts import SplitKind
from shared.errors import ConfigurationError
from shared.spec.models import HttpSource, Pagination
from tests.support.json_http import JsonServer, Reply, Request, json_server

pytestmark = pytest.mark.integration

TOTAL = 25
PAGE_SIZE = 10
RECORDS = [{"id": i, "name": f"n{i}", "score": i / 2} for i in range(TOTAL)]


@dataclass
class Api:
    """The test server, and the failures it is to serve before it answers (key -> failures left)."""

    server: JsonServer
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def requests(self) -> list[Request]:
        return self.server.requests


def _page(number: int) -> list[dict[str, Any]]:
    return RECORDS[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]


def make_responder(failures: dict[str, int]) -> Callable[[Request], Reply]:
    def respond(request: Request) -> Reply:
        query = request.query
        key = query.get("key", "")
        if key and failures.get(key, 0) > 0:
            failures[key] -= 1
            if key.startswith("throttle"):
                return Reply(429, {"error": "try later"}, {"Retry-After": "0"})
            return Reply(503, {"error": "try later"})
        if request.path == "/pages":
            return Reply(200, {"data": {"items": _page(int(query.get("page", "1")))}})
        if request.path == "/cursor":
            number = int(query.get("cursor", "1"))
            nxt = str(number + 1) if number * PAGE_SIZE < TOTAL else None
            return Reply(200, {"results": _page(number), "meta": {"next": nxt}})
        if request.path == "/link":
            number = int(query.get("p", "1"))
            link = {"Link": f'</link?p={number + 1}>; rel="next"'} if number * PAGE_SIZE < TOTAL else {}
            return Reply(200, _page(number), link)
        if request.path == "/single":
            return Reply(200, {"id": 1, "name": "only"})
        if request.path == "/auth":
            if request.authorization != "Bearer s3cret":
                return Reply(401, {"error": "unauthorized"})
            return Reply(200, RECORDS[:3])
        if request.path == "/down":
            return Reply(500, {"error": "boom"})
        if request.path == "/html":
            return Reply(200, b"<html>not json</html>")
        return Reply(404, {"error": "not found"})

    return respond


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    failures: dict[str, int] = {}
    with json_server(make_responder(failures)) as server:
        yield Api(server, failures)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_api, "BACKOFF_BASE_S", 0.01)


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test servers listen on 127.0.0.1, which the egress policy refuses unless allow-listed (the
    refusal itself is tested in test_http_egress.py)."""
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", "127.0.0.1")


def read_all(source: HttpSource, parallelism: int | None = None, batch_rows: int = 7) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for split in plan_splits(source, parallelism):
        for table in read_split(source, split, batch_rows):
            assert 0 < table.num_rows <= batch_rows
            rows.extend(table.to_pylist())
    return rows


def test_page_pagination_until_empty_page(api: Api) -> None:
    source = HttpSource(url=f"{api.base}/pages", pagination=Pagination.PAGE, records_path="data.items")
    assert [s.kind for s in plan_splits(source, 4)] == [SplitKind.PAGES]  # no max_pages: one split
    assert read_all(source) == RECORDS


@pytest.mark.parametrize("parallelism", [2, 3, 5])
def test_page_ranges_split_and_reassemble(api: Api, parallelism: int) -> None:
    source = HttpSource(
        url=f"{api.base}/pages?extra=1", pagination=Pagination.PAGE, records_path="data.items", max_pages=5
    )
    splits = plan_splits(source, parallelism)
    assert len(splits) == parallelism
    before = len(api.requests)
    assert read_all(source, parallelism) == RECORDS
    assert all("extra=1" in r.target for r in api.requests[before:])  # the URL's own query is kept


def test_max_pages_limits_the_read(api: Api) -> None:
    source = HttpSource(
        url=f"{api.base}/pages", pagination=Pagination.PAGE, records_path="data.items", max_pages=2
    )
    assert read_all(source) == RECORDS[:20]


def test_cursor_pagination(api: Api) -> None:
    source = HttpSource(
        url=f"{api.base}/cursor",
        pagination=Pagination.CURSOR,
        records_path="results",
        cursor_path="meta.next",
    )
    assert [s.kind for s in plan_splits(source, 8)] == [SplitKind.WHOLE]
    assert read_all(source) == RECORDS


def test_link_header_pagination(api: Api) -> None:
    source = HttpSource(url=f"{api.base}/link", pagination=Pagination.LINK)
    assert read_all(source, batch_rows=100) == RECORDS
    assert (
        read_all(HttpSource(url=f"{api.base}/link", pagination=Pagination.LINK, max_pages=1)) == RECORDS[:10]
    )


def test_single_object_is_one_record(api: Api) -> None:
    assert read_all(HttpSource(url=f"{api.base}/single")) == [{"id": 1, "name": "only"}]


def test_429_then_success_honours_retry_after(api: Api) -> None:
    api.failures["throttle-a"] = 2
    source = HttpSource(
        url=f"{api.base}/pages?key=throttle-a", pagination=Pagination.PAGE, records_path="data.items"
    )
    assert read_all(source) == RECORDS
    assert api.failures["throttle-a"] == 0


def test_5xx_retried_then_transient_error(api: Api) -> None:
    api.failures["flaky-b"] = 1
    assert read_all(HttpSource(url=f"{api.base}/link?key=flaky-b", max_retries=1)) == RECORDS[:10]
    before = len(api.requests)
    with pytest.raises(SourceUnavailableError, match="HTTP 500 after 2 retries"):
        read_all(HttpSource(url=f"{api.base}/down", max_retries=2))
    assert len(api.requests) - before == 3


def test_connection_refused_is_transient() -> None:
    with pytest.raises(SourceUnavailableError):
        read_all(HttpSource(url="http://127.0.0.1:1/nothing", max_retries=1))


def test_authorization_from_a_declared_connection(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AOETL_POLICY_CONNECTIONS",
        json.dumps({"test-api": {"kind": "http", "env": "AOETL_TEST_HTTP_TOKEN", "hosts": ["127.0.0.1"]}}),
    )
    monkeypatch.delenv("AOETL_TEST_HTTP_TOKEN", raising=False)
    source = HttpSource(url=f"{api.base}/auth", connection="test-api")
    with pytest.raises(ConfigurationError, match="AOETL_TEST_HTTP_TOKEN"):
        read_all(source)
    monkeypatch.setenv("AOETL_TEST_HTTP_TOKEN", "Bearer wrong")
    with pytest.raises(SourceReadError, match="HTTP 401"):
        read_all(source)
    monkeypatch.setenv("AOETL_TEST_HTTP_TOKEN", "Bearer s3cret")
    assert read_all(source) == RECORDS[:3]
    assert api.requests[-1].authorization == "Bearer s3cret"


def test_terminal_errors(api: Api) -> None:
    with pytest.raises(SourceNotFoundError):
        read_all(HttpSource(url=f"{api.base}/nowhere"))
    with pytest.raises(SourceReadError, match="not JSON"):
        read_all(HttpSource(url=f"{api.base}/html"))
    with pytest.raises(SourceReadError, match="records_path"):
        read_all(HttpSource(url=f"{api.base}/pages", records_path="data.missing"))


def test_rate_limit_spaces_requests(api: Api) -> None:
    source = HttpSource(url=f"{api.base}/link", pagination=Pagination.LINK, rate_limit_per_s=5)
    before = len(api.requests)
    assert read_all(source) == RECORDS
    times = [r.at for r in api.requests[before:]]
    assert len(times) == 3
    # arrival times at the server: 200 ms apart when sent, give or take the scheduling jitter of a busy
    # 2-core machine (a 5 ms margin on 50 ms failed there); unlimited, they would be ~1 ms apart
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(times))
