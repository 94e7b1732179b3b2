"""The HTTP source's egress against real HTTP servers on 127.0.0.1 (``tests.support.json_http``):
loopback refused unless allow-listed (exactly the allowed port), every redirect checked (a loopback port
that is not allowed, the metadata address, other schemes), a name that resolves to loopback refused at
connect time, and the Authorization header sent only to the spec URL's origin. Never touches the
internet."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from shared.connectors import SourceReadError, plan_splits, read_split
from shared.policy.egress import EgressRefusedError
from shared.spec.models import HttpSource, Pagination
from tests.support.json_http import JsonServer, Reply, Request, json_server

pytestmark = pytest.mark.integration

TOKEN = "Bearer egress-t0ken"
RECORDS = [{"id": 1}, {"id": 2}]


Servers = tuple[JsonServer, JsonServer]


def respond(request: Request) -> Reply:
    if request.path == "/data":
        return Reply(200, RECORDS)
    if request.path == "/redirect":
        return Reply(302, {}, {"Location": request.query["to"]})
    if request.path == "/loop":
        return Reply(302, {}, {"Location": "/loop"})
    if request.path == "/link-away":
        return Reply(200, RECORDS, {"Link": f'<{request.query["to"]}>; rel="next"'})
    return Reply(404, {})


def sent(server: JsonServer) -> list[tuple[str, str | None]]:
    """What ``server`` received: (path, Authorization) of each request."""
    return [(r.path, r.authorization) for r in server.requests]


@pytest.fixture
def servers() -> Iterator[Servers]:
    """``front`` (the one the tests allow-list) and ``other``, a second loopback port."""
    with json_server(respond) as front, json_server(respond) as other:
        yield front, other


def allow(monkeypatch: pytest.MonkeyPatch, *entries: str) -> None:
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", ",".join(entries))


def read_all(source: HttpSource) -> list[dict[str, Any]]:
    return [
        row
        for split in plan_splits(source, None)
        for t in read_split(source, split, 100)
        for row in t.to_pylist()
    ]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "0x7f000001", "2130706433", "127.1", "localhost", "[::ffff:127.0.0.1]"]
)
def test_loopback_is_refused_in_every_spelling(
    servers: Servers, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    front, _ = servers
    monkeypatch.delenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", raising=False)
    with pytest.raises(EgressRefusedError, match="loopback"):
        read_all(HttpSource(url=f"http://{host}:{front.port}/data"))
    assert front.requests == []


def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The static check cannot know what a name resolves to; the transport resolves, checks and refuses."""
    front, _ = servers
    monkeypatch.delenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", raising=False)
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "api.internal.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(EgressRefusedError, match=r"api\.internal\.test.*127\.0\.0\.1.*loopback"):
        read_all(HttpSource(url=f"http://api.internal.test:{front.port}/data"))
    assert front.requests == []
    allow(monkeypatch, f"api.internal.test:{front.port}")  # an operator may open the name
    assert read_all(HttpSource(url=f"http://api.internal.test:{front.port}/data")) == RECORDS


def test_the_allow_list_opens_exactly_the_allowed_port(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, other = servers
    allow(monkeypatch, f"127.0.0.1:{front.port}")
    assert read_all(HttpSource(url=f"{front.base}/data")) == RECORDS
    with pytest.raises(EgressRefusedError):
        read_all(HttpSource(url=f"{other.base}/data"))
    assert other.requests == []


@pytest.mark.parametrize(
    "target",
    ["{other}/data", "http://0x7f000001:{other_port}/data", "http://169.254.169.254/latest/meta-data/",
     "http://[fd00:ec2::254]/latest/meta-data/", "file:///etc/passwd", "http://user:pw@{front_host}/data"],
    ids=["loopback-port", "hex-loopback", "metadata", "metadata-v6", "file", "userinfo"],
)  # fmt: skip
def test_a_redirect_to_a_refused_target_is_refused_before_it_is_followed(
    servers: Servers, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    front, other = servers
    allow(monkeypatch, f"127.0.0.1:{front.port}")  # the first hop is allowed, the target is not
    to = target.format(other=other.base, other_port=other.port, front_host=f"127.0.0.1:{front.port}")
    with pytest.raises(EgressRefusedError, match="redirect"):
        read_all(HttpSource(url=f"{front.base}/redirect?to={to}"))
    assert other.requests == []
    assert [r.path for r in front.requests] == ["/redirect"]


def test_redirects_are_bounded(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    front, _ = servers
    allow(monkeypatch, f"127.0.0.1:{front.port}")
    with pytest.raises(SourceReadError, match="more than 5 redirects"):
        read_all(HttpSource(url=f"{front.base}/loop"))
    assert len(front.requests) == 6


def test_credentials_go_to_the_spec_urls_origin_only(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, other = servers
    allow(monkeypatch, "127.0.0.1")
    monkeypatch.setenv(
        "AOETL_POLICY_CONNECTIONS",
        json.dumps({"api": {"kind": "http", "env": "AOETL_TEST_EGRESS_TOKEN", "hosts": ["127.0.0.1"]}}),
    )
    monkeypatch.setenv("AOETL_TEST_EGRESS_TOKEN", TOKEN)
    same_origin = HttpSource(url=f"{front.base}/redirect?to=/data", connection="api")
    assert read_all(same_origin) == RECORDS
    assert sent(front) == [("/redirect", TOKEN), ("/data", TOKEN)]
    away = HttpSource(url=f"{front.base}/redirect?to={other.base}/data", connection="api")
    assert read_all(away) == RECORDS
    assert sent(other) == [("/data", None)]  # another port is another origin: no header
    linked = HttpSource(
        url=f"{front.base}/link-away?to={other.base}/data", connection="api", pagination=Pagination.LINK
    )
    assert read_all(linked) == RECORDS + RECORDS
    assert sent(other)[-1] == ("/data", None)
    assert sent(front)[-1] == ("/link-away", TOKEN)
