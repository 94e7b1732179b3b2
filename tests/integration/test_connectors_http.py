"""HTTP connector against a real HTTP server on 127.0.0.1 (stdlib, in a thread): pagination styles,
retries with Retry-After, auth, rate limiting and error classification. Never touches the internet."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

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

pytestmark = pytest.mark.integration

TOTAL = 25
PAGE_SIZE = 10
RECORDS = [{"id": i, "name": f"n{i}", "score": i / 2} for i in range(TOTAL)]


@dataclass
class Api:
    base: str
    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # key -> failures left to serve


def _page(number: int) -> list[dict[str, Any]]:
    return RECORDS[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]


def make_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            api.requests.append((time.monotonic(), self.path, dict(self.headers)))
            key = query.get("key", "")
            if key and api.failures.get(key, 0) > 0:
                api.failures[key] -= 1
                status = 429 if key.startswith("throttle") else 503
                self.send(status, {"error": "try later"}, {"Retry-After": "0"} if status == 429 else None)
                return
            if url.path == "/pages":
                self.send(200, {"data": {"items": _page(int(query.get("page", "1")))}})
            elif url.path == "/cursor":
                number = int(query.get("cursor", "1"))
                nxt = str(number + 1) if number * PAGE_SIZE < TOTAL else None
                self.send(200, {"results": _page(number), "meta": {"next": nxt}})
            elif url.path == "/link":
                number = int(query.get("p", "1"))
                link = {"Link": f'</link?p={number + 1}>; rel="next"'} if number * PAGE_SIZE < TOTAL else {}
                self.send(200, _page(number), link)
            elif url.path == "/single":
                self.send(200, {"id": 1, "name": "only"})
            elif url.path == "/auth":
                if self.headers.get("Authorization") != "Bearer s3cret":
                    self.send(401, {"error": "unauthorized"})
                else:
                    self.send(200, RECORDS[:3])
            elif url.path == "/down":
                self.send(500, {"error": "boom"})
            elif url.path == "/html":
                self.send(200, b"<html>not json</html>")
            else:
                self.send(404, {"error": "not found"})

    return Handler


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Api(base=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = make_handler(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


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
    assert all("extra=1" in path for _, path, _ in api.requests[before:])  # the URL's own query is kept


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
    assert api.requests[-1][2]["Authorization"] == "Bearer s3cret"


def test_terminal_errors(api: Api) -> None:
    with pytest.raises(SourceNotFoundError):
        read_all(HttpSource(url=f"{api.base}/nowhere"))
    with pytest.raises(SourceReadError, match="not JSON"):
        read_all(HttpSource(url=f"{api.base}/html"))
    with pytest.raises(SourceReadError, match="records_path"):
        read_all(HttpSource(url=f"{api.base}/pages", records_path="data.missing"))


def test_rate_limit_spaces_requests(api: Api) -> None:
    source = HttpSource(url=f"{api.base}/link", pagination=Pagination.LINK, rate_limit_per_s=20)
    before = len(api.requests)
    assert read_all(source) == RECORDS
    times = [t for t, _, _ in api.requests[before:]]
    assert len(times) == 3
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(times))
