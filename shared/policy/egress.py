"""Where an ``http`` source may connect: public addresses only, unless the operator allow-lists more.

Refused: loopback, private (RFC 1918, CGNAT 100.64/10...), link-local (169.254/16, fe80::/10, so the
cloud metadata endpoints 169.254.169.254 and fd00:ec2::254 too), unique-local (fc00::/7), site-local,
multicast, unspecified (0.0.0.0, ::) and reserved addresses: whatever ``ipaddress`` does not call global.
An IPv6 address that embeds an IPv4 one (IPv4-mapped ``::ffff:127.0.0.1``, 6to4, Teredo, NAT64
``64:ff9b::/96``) is judged by the IPv4 address inside. Every spelling of an address is the same address:
``0x7f000001``, ``2130706433``, ``0177.0.0.1`` and ``127.1`` are 127.0.0.1 (``literal_address`` reads them
as the C library does), ``[::1]`` is ::1, and a host name is judged by *every* address it resolves to.

``AOETL_POLICY_HTTP_EGRESS_ALLOW`` (``AllowEntry``) opens chosen destinations: a host name (as written in the
URL), an address or a CIDR network, each optionally with ``:port`` (``[v6]:port`` for IPv6), so tests and
on-premises users can reach exactly the hosts they choose.

Checked at three points, each needed:

* at validation (``egress_issues``, a spec policy rule): the URL's scheme, that it carries no userinfo
  (credentials belong in a connection), and its host when it is an address literal or ``localhost``.
  Names are not resolved there: the answer may differ by the time the connector runs.
* at connect time, for every connection (``EgressBackend``): the host is resolved once with
  ``getaddrinfo``, every address is checked, and the socket is connected to a checked address itself, never
  to the name. That is the pin against DNS rebinding: no second lookup happens between the check and the
  connect, so a name that answers a public address to the check and 127.0.0.1 to the connect cannot get
  through. httpx takes no resolver, so ``EgressTransport`` is httpx's own transport whose httpcore
  connection pool is built with this network backend (httpcore's documented extension point); TLS still
  verifies the certificate against the URL's host name, which httpcore passes separately.
* on every redirect: the HTTP source follows redirects itself (``shared.connectors.http_api``), checks each
  target URL like the spec's, and connects through the same backend. Proxies from the environment are not
  used (``trust_env=False``): a proxy would connect on our behalf and escape the check.

Hand-written rather than a library: the SSRF guards on PyPI for httpx are young single-author packages or
async-only; this is the standard library's ``ipaddress`` plus httpcore's network-backend hook.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.policy.errors import PolicyViolation
from shared.policy.tenancy import DEFAULT_TENANT
from shared.spec.loader import SpecIssue
from shared.spec.models import HttpSource, PipelineSpec

if TYPE_CHECKING:
    from shared.policy.settings import PolicySettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV = "AOETL_POLICY_HTTP_EGRESS_ALLOW"
ALLOWED_SCHEMES = ("http", "https")
LOCALHOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "192.0.0.192")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
# What inet_aton accepts: 1-4 parts, each decimal, octal (leading 0) or hex (0x). Matched first because
# glibc's inet_aton also accepts trailing garbage after a space.
_IPV4_SPELLING = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


class EgressRefusedError(PolicyViolation):
    """An http source tried to reach an address the egress policy refuses (retrying cannot help)."""


# ------------------------------------------------------------------------------------------ addresses
def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form the resolver accepts as numeric; None for a name."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone id (fe80::1%eth0, or %25eth0 in a URL)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _IPV4_SPELLING.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not to be reached (``"loopback"``, ``"link-local"``...), None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            why = forbidden_reason(inner)
            return f"{why} (IPv4 {inner} embedded in IPv6)" if why else None
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    for why, flagged in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("unique-local", address in _UNIQUE_LOCAL),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    ):
        if flagged:
            return why
    return None


# ------------------------------------------------------------------------------------------ allow list
@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: a host name or a network, and optionally one port."""

    host: str | None
    network: IPNetwork | None
    port: int | None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """``name``, ``name:port``, ``10.0.0.0/8``, ``127.0.0.1:8080``, ``::1``, ``[::1]:8080``,
        ``[fd00::/8]:443``. A ValueError names the entry."""
        entry = text.strip()
        port: int | None = None
        if entry.startswith("["):
            inner, closed, rest = entry[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise ValueError(f"allow entry {text!r}: expected ']' or ']:port'")
            host_part, port_text = inner, rest[1:] if rest else ""
        elif entry.count(":") == 1:
            host_part, port_text = entry.split(":")
        else:  # a name, an IPv4 address or network, or a bare IPv6 address or network
            host_part, port_text = entry, ""
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"allow entry {text!r}: {port_text!r} is not a port")
            port = int(port_text)
        if not host_part:
            raise ValueError(f"allow entry {text!r} names no host")
        try:
            return cls(None, ipaddress.ip_network(host_part, strict=False), port)
        except ValueError:
            pass
        address = literal_address(host_part)
        if address is not None:
            return cls(None, ipaddress.ip_network(address), port)
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", host_part):
            raise ValueError(f"allow entry {text!r}: not a host name, address or network")
        return cls(_normal_name(host_part), None, port)

    def matches(self, host: str, port: int, address: IPAddress | None = None) -> bool:
        """Whether this entry covers a connection to ``host`` (as written) on ``port``, at ``address``."""
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == _normal_name(host)
        assert self.network is not None
        address = address if address is not None else literal_address(host)
        return address is not None and address.version == self.network.version and address in self.network


def _normal_name(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


def allow_entry_for(host: str, port: int) -> str:
    """The allow-list entry naming exactly ``host`` (as written) on ``port``."""
    name = _normal_name(host)
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


# ------------------------------------------------------------------------------------------ the policy
class EgressPolicy:
    """Decides, from the allow list, whether a host, port and address may be reached."""

    def __init__(
        self, allow: Iterable[str] = (), *, subject: str = "http sources", allow_env: str = ALLOW_ENV
    ):
        self.allow = tuple(AllowEntry.parse(entry) for entry in allow)
        # what a refusal says: who is refused ("s3 connection endpoints"...) and the variable opening it
        self.subject = subject
        self.allow_env = allow_env

    @classmethod
    def from_settings(cls, policy: PolicySettings, *, subject: str = "http sources") -> EgressPolicy:
        return cls(policy.http_egress_allow, subject=subject)

    def refusal(self, host: str, port: int, address: IPAddress) -> str | None:
        """Why connecting to ``host`` at ``address`` on ``port`` is refused, with the fix (the allow-list
        entry that would open exactly this host and port); None when it is allowed."""
        why = forbidden_reason(address)
        if why is None or any(entry.matches(host, port, address) for entry in self.allow):
            return None
        named = f"{host} ({address})" if _normal_name(host) != str(address) else str(address)
        fix = f"add '{allow_entry_for(host, port)}' to {self.allow_env} in the services' environment"
        return (
            f"{named} is a {why} address; {self.subject} reach public addresses only unless allow-listed:"
            f" to allow it, {fix}"
        )

    def check_url(self, url: str) -> str | None:
        """The checks that need no DNS: scheme, no userinfo, and an address-literal or localhost host."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return f"not a valid URL: {exc}"
        if parts.scheme.lower() not in ALLOWED_SCHEMES:
            return f"scheme {parts.scheme!r} is not allowed (http or https only)"
        if "@" in parts.netloc:
            return "credentials in the URL are not allowed: declare a connection and name it instead"
        host = parts.hostname or ""
        if not host:
            return "the URL names no host"
        port = port or (443 if parts.scheme.lower() == "https" else 80)
        address = literal_address(host)
        name = _normal_name(host)
        if address is None and (name in LOCALHOST_NAMES or name.endswith(".localhost")):
            address = ipaddress.IPv4Address("127.0.0.1")  # resolved locally whatever DNS says
        return None if address is None else self.refusal(host, port, address)

    def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` once and check every address; raise ``EgressRefusedError`` if any is refused
        (a name answering one public and one private address is refused: which one a client would use is
        not ours to predict). ``socket.gaierror`` (no such name) propagates."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            why = self.refusal(host, port, address)
            if why is not None:
                raise EgressRefusedError(f"connection to {host}:{port} refused: {why}")
            if address not in addresses:
                addresses.append(address)
        return addresses


# ------------------------------------------------------------------------------------------ enforcement
class EgressBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses the policy checked (the pin)."""

    def __init__(self, policy: EgressPolicy):
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._policy.checked_addresses(host, port)
        except socket.gaierror as exc:  # an unresolvable name is a connection error, as httpx reports it
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:  # a numeric host: create_connection does no lookup, so this is the address checked
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} resolves to no address")


class EgressTransport(httpx.HTTPTransport):
    """httpx's transport (its request and exception mapping) over a pool that connects through
    ``EgressBackend``. httpx has no parameter for a network backend, hence the pool is replaced."""

    def __init__(self, policy: EgressPolicy, *, verify: bool = True):
        super().__init__(verify=verify, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=EgressBackend(policy),
        )


def egress_client(policy: EgressPolicy, **kwargs: Any) -> httpx.Client:
    """An httpx client whose every connection is checked; it follows no redirect by itself."""
    return httpx.Client(transport=EgressTransport(policy), trust_env=False, follow_redirects=False, **kwargs)


# ------------------------------------------------------------------------------------------ the rule
def egress_issues(
    spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT
) -> list[SpecIssue]:
    """The policy rule for an http source's URL (the checks that need no DNS; the same for every tenant)."""
    if not isinstance(spec.source, HttpSource):
        return []
    why = EgressPolicy.from_settings(policy).check_url(spec.source.url)
    return [SpecIssue("source.url", why)] if why else []
