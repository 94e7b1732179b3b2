"""The policy rule for object storage: a file source or destination at an ``s3://`` URL names a declared
``s3`` connection its tenant may use, and the URL lies inside that connection's ``roots``.

The connection's endpoint goes through the egress policy (``shared.policy.egress``): an endpoint on a
loopback, private or link-local address (the cloud metadata address 169.254.169.254 included) is refused
unless ``AOETL_POLICY_HTTP_EGRESS_ALLOW`` lists it, at validation for address literals and ``localhost``, and
where the connector acts for every address the endpoint's name resolves to (``endpoint_refusal`` with
``resolve=True``). Checked at validation (``check_object_store``) and again where a connector or sink opens
an object (``s3_use``), which raises ``PolicyViolation``; the tenant is checked at validation only, as for
every connection (task messages carry no tenant).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shared.policy.connections import Connection, ConnectionKind, ConnectionPolicyError, ConnectionUse
from shared.policy.egress import EgressPolicy
from shared.policy.errors import PolicyViolation
from shared.policy.s3_urls import confine_s3, is_s3
from shared.policy.tenancy import DEFAULT_TENANT
from shared.spec.loader import SpecIssue
from shared.spec.models import (
    CsvSource,
    DuckDBDestination,
    JsonlDestination,
    JsonlSource,
    ParquetDestination,
    ParquetSource,
    PipelineSpec,
)

if TYPE_CHECKING:
    from shared.policy.settings import PolicySettings

FilePart = CsvSource | JsonlSource | ParquetSource | ParquetDestination | JsonlDestination


def s3_use(
    path: str, connection: str | None, connections: dict[str, Connection], *, tenant: str | None
) -> ConnectionUse:
    """The ``s3`` connection a part at ``path`` uses, checked: declared, of kind s3, allowed to
    ``tenant`` (unless None), ``path`` inside its roots. Raises ``ConnectionPolicyError`` or
    ``PolicyViolation``."""
    if connection is None:
        raise ConnectionPolicyError("an s3:// path needs 'connection': a declared s3 connection")
    declared = connections.get(connection)
    if declared is None or declared.kind is not ConnectionKind.S3:
        known = ", ".join(sorted(n for n, c in connections.items() if c.kind is ConnectionKind.S3)) or "none"
        raise ConnectionPolicyError(f"no s3 connection named {connection!r} is declared (declared: {known})")
    if tenant is not None and not declared.allows_tenant(tenant):
        raise ConnectionPolicyError(f"tenant {tenant!r} may not use connection {connection!r}")
    confine_s3(path, declared.roots, connection=connection)
    return ConnectionUse(connection, declared, "connection")


def endpoint_egress(policy: PolicySettings) -> EgressPolicy:
    """The egress policy as it speaks of object-storage endpoints."""
    return EgressPolicy.from_settings(policy, subject="s3 connection endpoints")


def endpoint_refusal(use: ConnectionUse, policy: EgressPolicy, *, resolve: bool = False) -> str | None:
    """Why the connection's endpoint may not be reached, naming the connection, its endpoint and the fix
    (None: it may). ``resolve`` also checks every address its name resolves to (where the connector acts;
    not at validation, the answer may change)."""
    endpoint = use.connection.endpoint
    if endpoint is None:
        return None
    why = policy.check_url(endpoint)
    if not why and resolve:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            policy.checked_addresses(parts.hostname or "", port)
        except PolicyViolation as exc:
            why = str(exc)
        except socket.gaierror as exc:
            why = f"cannot resolve its host: {exc.strerror}; check the connection's endpoint"
    if not why:
        return None
    return f"the endpoint {endpoint} of s3 connection {use.name!r} is refused: {why}"


def check_object_store(
    spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT
) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    egress = endpoint_egress(policy)
    for where, part in (("source", spec.source), ("destination", spec.destination)):
        if isinstance(part, DuckDBDestination) and is_s3(part.path):
            issues.append(
                SpecIssue(f"{where}.duckdb.path", "a DuckDB destination is a local file, not s3://")
            )
        if not isinstance(part, FilePart):
            continue
        prefix = f"{where}.{part.type}"
        if not is_s3(part.path):
            if part.connection is not None:
                issues.append(SpecIssue(f"{prefix}.connection", "'connection' is for s3:// paths only"))
            continue
        try:
            use = s3_use(part.path, part.connection, policy.connections, tenant=tenant)
        except ConnectionPolicyError as exc:
            issues.append(SpecIssue(f"{prefix}.connection", str(exc)))
            continue
        except PolicyViolation as exc:
            issues.append(SpecIssue(f"{prefix}.path", str(exc)))
            continue
        why = endpoint_refusal(use, egress)
        if why:
            issues.append(SpecIssue(f"{prefix}.connection", why))
    return issues
