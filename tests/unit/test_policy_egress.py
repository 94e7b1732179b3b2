"""The egress rule of http sources: every spelling of an address, every forbidden range, the allow list,
the validation rule, and the pin (the connect goes to the address that was checked, resolved once)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpcore
import pytest

from shared.errors import is_transient
from shared.policy import check_spec, load_policy
from shared.policy.egress import (
    AllowEntry,
    EgressBackend,
    EgressPolicy,
    EgressRefusedError,
    forbidden_reason,
    literal_address,
)
from shared.spec import parse_spec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),  # hexadecimal
        ("0X7F000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("017700000001", "127.0.0.1"),  # octal
        ("0177.0.0.1", "127.0.0.1"),  # octal part
        ("0x7f.0.0.1", "127.0.0.1"),  # hexadecimal part
        ("127.1", "127.0.0.1"),  # short form
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),  # zone id
        ("fe80::1%25eth0", "fe80::1"),  # zone id as a URL writes it
        ("[fd00:ec2::254]", "fd00:ec2::254"),
    ],
)
def test_every_spelling_of_an_address_is_read(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "127.0.0.1.nip.io", "localhost", "1.2.3.4 evil", "0x7g", ""])
def test_names_are_not_addresses(host: str) -> None:
    assert literal_address(host) is None


def _teredo(client: str) -> str:
    """A Teredo address whose (obfuscated) client is ``client``."""
    prefix = int(ipaddress.IPv6Address("2001::"))
    server = int(ipaddress.IPv4Address("8.8.8.8")) << 64
    return str(ipaddress.IPv6Address(prefix | server | (~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF)))


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("192.0.2.1", "private"),  # documentation
        ("240.0.0.1", "private"),  # reserved
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 embedded in IPv6)"),
        ("::ffff:169.254.169.254", "cloud metadata (IPv4 169.254.169.254 embedded in IPv6)"),
        ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 embedded in IPv6)"),  # 6to4
        ("64:ff9b::7f00:1", "loopback (IPv4 127.0.0.1 embedded in IPv6)"),  # NAT64
        ("64:ff9b::a00:1", "private (IPv4 10.0.0.1 embedded in IPv6)"),
        (_teredo("127.0.0.1"), "loopback (IPv4 127.0.0.1 embedded in IPv6)"),
    ],
)
def test_forbidden_addresses(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1/x", "loopback"),
        ("http://0x7f000001/x", "loopback"),
        ("http://2130706433/x", "loopback"),
        ("http://0177.0.0.1/x", "loopback"),
        ("http://127.1:8080/x", "loopback"),
        ("http://[::1]:8080/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.5/", "private"),
        ("http://localhost:9092/", "loopback"),
        ("http://LOCALHOST./", "loopback"),
        ("http://kafka.localhost/", "loopback"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("ftp://example.com/x", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("https://user:pw@api.example.com/", "credentials in the URL are not allowed"),
        ("http://:80/", "names no host"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_urls_refused_without_dns(url: str, expected: str) -> None:
    why = EgressPolicy().check_url(url)
    assert why is not None and expected in why


@pytest.mark.parametrize(
    "url", ["https://api.example.com/v1", "http://8.8.8.8/", "https://[2606:4700::1111]/"]
)
def test_public_urls_pass_the_static_check(url: str) -> None:
    assert EgressPolicy().check_url(url) is None


def test_a_refusal_names_the_allow_entry_that_would_open_exactly_it() -> None:
    assert EgressPolicy().check_url("http://[::1]:8080/x") == (
        "::1 is a loopback address; http sources reach public addresses only unless allow-listed: to allow"
        " it, add '[::1]:8080' to AOETL_POLICY_HTTP_EGRESS_ALLOW in the services' environment"
    )
    named = EgressPolicy(subject="alert endpoints", allow_env="AOETL_ALERT_ROUTING_EGRESS_ALLOW")
    why = named.check_url("https://LocalHost./hook")
    assert why is not None and why.startswith("localhost. (127.0.0.1) is a loopback address; alert endpoints")
    assert why.endswith("'localhost:443' to AOETL_ALERT_ROUTING_EGRESS_ALLOW in the services' environment")
    assert EgressPolicy(["localhost:443"]).check_url("https://LocalHost./hook") is None  # the entry works


# ------------------------------------------------------------------------------------------ allow list
@pytest.mark.parametrize(
    ("entry", "host", "network", "port"),
    [
        ("127.0.0.1", None, "127.0.0.1/32", None),
        ("127.0.0.1:8080", None, "127.0.0.1/32", 8080),
        ("0x7f000001:8080", None, "127.0.0.1/32", 8080),
        ("10.0.0.0/8", None, "10.0.0.0/8", None),
        ("10.0.0.0/8:443", None, "10.0.0.0/8", 443),
        ("::1", None, "::1/128", None),
        ("[::1]:9000", None, "::1/128", 9000),
        ("fd00::/8", None, "fd00::/8", None),
        ("[fd00::/8]:443", None, "fd00::/8", 443),
        ("Internal.Example.", "internal.example", None, None),
        ("internal.example:8443", "internal.example", None, 8443),
    ],
)
def test_allow_entries_parse(entry: str, host: str | None, network: str | None, port: int | None) -> None:
    parsed = AllowEntry.parse(entry)
    assert parsed.host == host
    assert parsed.network == (ipaddress.ip_network(network) if network else None)
    assert parsed.port == port


@pytest.mark.parametrize(
    "entry", ["", ":80", "127.0.0.1:http", "127.0.0.1:0", "[::1", "[::1]x", "a b", "h:99999"]
)
def test_bad_allow_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allow entry"):
        AllowEntry.parse(entry)


def test_the_allow_list_opens_exactly_what_it_names() -> None:
    policy = EgressPolicy(["127.0.0.1:8080", "10.0.0.0/8", "[::1]:9000", "metrics.internal"])
    assert policy.check_url("http://127.0.0.1:8080/x") is None
    assert policy.check_url("http://0x7f000001:8080/x") is None  # the same address, spelled otherwise
    assert policy.check_url("http://127.0.0.1:8081/x") is not None  # another port
    assert policy.check_url("http://127.0.0.2:8080/x") is not None  # another address
    assert policy.check_url("http://10.9.8.7:1234/") is None
    assert policy.check_url("http://[::1]:9000/") is None
    assert policy.check_url("http://[::1]:9001/") is not None
    assert policy.check_url("http://169.254.169.254/") is not None
    address = ipaddress.ip_address("192.168.1.20")
    assert policy.refusal("metrics.internal", 80, address) is None  # a name allow-lists its addresses
    assert policy.refusal("other.internal", 80, address) is not None


def test_localhost_can_be_allow_listed_by_name_or_address() -> None:
    assert EgressPolicy(["localhost"]).check_url("http://localhost:1234/") is None
    assert EgressPolicy(["127.0.0.1"]).check_url("http://localhost:1234/") is None
    assert EgressPolicy(["localhost:80"]).check_url("http://localhost:1234/") is not None


def test_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", "127.0.0.1:8080, 10.0.0.0/8")
    assert load_policy().http_egress_allow == ["127.0.0.1:8080", "10.0.0.0/8"]
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", '["[::1]:9000"]')
    assert load_policy().http_egress_allow == ["[::1]:9000"]
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", "127.0.0.1:http")
    with pytest.raises(Exception, match="AOETL_POLICY_HTTP_EGRESS_ALLOW"):
        load_policy()


def test_the_policy_is_shared_until_an_aoetl_variable_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", "127.0.0.1:8080")
    first = load_policy()
    assert load_policy() is first, "built once for one environment"
    monkeypatch.setenv("AOETL_POSTGRES_DSN", "postgresql://elsewhere/db")  # feeds the default connection
    assert load_policy() is not first
    monkeypatch.setenv("AOETL_POLICY_HTTP_EGRESS_ALLOW", "10.0.0.1:80")
    assert load_policy().http_egress_allow == ["10.0.0.1:80"]


# ------------------------------------------------------------------------------------------ the rule
def _http_spec(url: str) -> Any:
    return parse_spec(
        {
            "name": "egress",
            "source": {"type": "http", "url": url},
            "destination": {"type": "jsonl", "path": "/tmp/o"},
        }
    )


def test_the_rule_reports_the_url_field() -> None:
    issues = check_spec(_http_spec("http://169.254.169.254/latest/meta-data/"), load_policy())
    assert [(i.path, "cloud metadata" in i.reason) for i in issues] == [("source.url", True)]
    assert check_spec(_http_spec("https://api.example.com/items"), load_policy()) == []
    allowed = load_policy(http_egress_allow=["127.0.0.1:8080"])
    assert check_spec(_http_spec("http://127.0.0.1:8080/items"), allowed) == []


# ------------------------------------------------------------------------------------------ the pin
class Resolver:
    """getaddrinfo answering from a script, one answer per call (a rebinding DNS server)."""

    def __init__(self, *answers: list[str]):
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(host)
        return _infos(self.answers.pop(0), int(port))


def _infos(addresses: list[str], port: int) -> list[Any]:
    out = []
    for a in addresses:
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        sockaddr = (a, port, 0, 0) if family is socket.AF_INET6 else (a, port)
        out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
    return out


@pytest.fixture
def connected(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts the real network backend is asked to connect to (nothing is actually connected)."""
    hosts: list[str] = []

    def fake_connect(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        hosts.append(host)
        return object()

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", fake_connect)
    return hosts


def test_the_connect_goes_to_the_checked_address_resolved_once(
    monkeypatch: pytest.MonkeyPatch, connected: list[str]
) -> None:
    """DNS rebinding: the name answers a public address to the check, then 127.0.0.1. The backend resolves
    once and hands the checked address (a literal) to the connect, so the second answer is never used."""
    resolver = Resolver(["93.184.216.34"], ["127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    EgressBackend(EgressPolicy()).connect_tcp("rebind.example", 80)
    assert connected == ["93.184.216.34"]
    assert resolver.calls == ["rebind.example"]


@pytest.mark.parametrize(
    "answer",
    [["127.0.0.1"], ["169.254.169.254"], ["::1"], ["93.184.216.34", "10.0.0.1"], ["::ffff:127.0.0.1"]],
    ids=["loopback", "metadata", "v6-loopback", "one-private-of-two", "mapped"],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_any_connect(
    monkeypatch: pytest.MonkeyPatch, connected: list[str], answer: list[str]
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(answer))
    with pytest.raises(EgressRefusedError, match=r"evil\.example"):
        EgressBackend(EgressPolicy()).connect_tcp("evil.example", 80)
    assert connected == []


def test_an_allow_listed_name_may_resolve_to_a_private_address(
    monkeypatch: pytest.MonkeyPatch, connected: list[str]
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(["10.1.1.1"]))
    EgressBackend(EgressPolicy(["intranet.example:443"])).connect_tcp("intranet.example", 443)
    assert connected == ["10.1.1.1"]


def test_an_unresolvable_name_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        EgressBackend(EgressPolicy()).connect_tcp("nowhere.example", 80)


def test_refusal_is_terminal() -> None:
    assert not is_transient(EgressRefusedError("x"))
