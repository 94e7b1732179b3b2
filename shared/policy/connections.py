"""Named connections: the only way a spec reaches a secret.

The operator declares each connection (``AOETL_POLICY_CONNECTIONS``, see ``shared.policy.settings``) as a
name and where its secret lives: an environment variable (``env``) or a file (``file``, e.g. a mounted
Kubernetes Secret; read at each use, so a rotated secret is picked up). A connection also says what its
secret is (``kind``: a PostgreSQL DSN, or an HTTP ``Authorization`` header value), which tenants may use it
(``tenants``, ``"*"`` for all) and, for ``http``, which hosts the header may be sent to (``hosts``: names,
addresses or networks, optionally ``:port``). So a spec can name a connection, never a variable: it cannot
make a service send the Kafka SASL password as an ``Authorization`` header, use another tenant's database,
or send a token to a host of its choosing.

A spec names the connection with ``connection`` (``postgres`` source and destination, ``http`` source).
A postgres part without one uses the connection ``default``; an http source without one sends no
credentials. Specs written before connections existed name a variable (``dsn_env``, ``auth_env``): such a
spec is accepted only when a declared connection of the right kind reads exactly that variable and allows
the use (tenant, hosts); it then means that connection. Otherwise it is REJECTED with the reason, at
``source.dsn_env`` (or ``destination.dsn_env``, ``source.auth_env``).

Checked twice: at validation (``connection_issues``: orchestrator, gateway, ``aoetl validate``), with the
run's tenant; and where the connector acts (``connection_for`` / ``postgres_dsn``: the PostgreSQL source
and sink, the HTTP source), which resolves the same way and raises ``ConnectionPolicyError``, a terminal
error. Task messages carry no tenant yet, so the tenant is checked at validation only: the orchestrator
is the only door through which a spec becomes tasks. Secrets read here are registered with
``shared.redaction``, so they are masked wherever they might be echoed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import ConfigurationError
from shared.policy.egress import AllowEntry
from shared.policy.errors import PolicyViolation
from shared.policy.s3_urls import parse_s3_url
from shared.policy.tenancy import DEFAULT_TENANT
from shared.redaction import register_secret
from shared.spec.loader import SpecIssue
from shared.spec.models import CONNECTION_NAME, HttpSource, PipelineSpec, PostgresDestination, PostgresSource

if TYPE_CHECKING:
    from shared.policy.settings import PolicySettings

__all__ = ["CONNECTION_NAME", "Connection", "ConnectionKind", "ConnectionPolicyError", "ConnectionUse"]

DEFAULT_CONNECTION = "default"
ANY_TENANT = "*"

ConnectionUser = PostgresSource | PostgresDestination | HttpSource


class ConnectionKind(StrEnum):
    POSTGRES = "postgres"  # the secret is a libpq DSN
    HTTP = "http"  # the secret is the value of the Authorization header
    S3 = "s3"  # the secret is "<access key id>:<secret access key>" (shared.connectors.object_store)


class Connection(BaseModel):
    """One declared connection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ConnectionKind = ConnectionKind.POSTGRES
    env: str | None = Field(None, min_length=1, description="environment variable holding the secret")
    file: Path | None = Field(None, description="file holding the secret (surrounding whitespace ignored)")
    tenants: list[str] = Field(default_factory=lambda: [DEFAULT_TENANT], min_length=1)
    hosts: list[str] = Field(default_factory=list, description="http: where the header may be sent")
    endpoint: str | None = Field(None, description="s3: an S3-compatible endpoint URL; unset: AWS")
    region: str | None = Field(None, description="s3: the region (unset: us-east-1)")
    roots: list[str] = Field(
        default_factory=list, description="s3: the s3://bucket/prefix roots this connection may read/write"
    )

    @model_validator(mode="after")
    def _well_formed(self) -> Connection:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file' (where the secret lives)")
        if self.kind is ConnectionKind.HTTP and not self.hosts:
            raise ValueError("an http connection needs 'hosts': where its Authorization header may be sent")
        for host in self.hosts:
            AllowEntry.parse(host)
        if self.kind is ConnectionKind.S3:
            if not self.roots:
                raise ValueError("an s3 connection needs 'roots': the s3://bucket/prefix it may use")
            for root in self.roots:
                try:
                    parse_s3_url(root)
                except PolicyViolation as exc:  # pydantic reports ValueErrors as validation errors
                    raise ValueError(str(exc)) from None
        return self

    @property
    def where(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def allows_tenant(self, tenant: str) -> bool:
        return ANY_TENANT in self.tenants or tenant in self.tenants

    def allows_url(self, url: str) -> bool:
        """An http connection's header may go to ``url`` only when its host is one of ``hosts``."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        return any(AllowEntry.parse(entry).matches(host, port) for entry in self.hosts)


def default_connections() -> dict[str, Connection]:
    """The connection declared when the operator declares none: the PostgreSQL of ``AOETL_POSTGRES_DSN``."""
    return {DEFAULT_CONNECTION: Connection(env="AOETL_POSTGRES_DSN")}


class ConnectionPolicyError(PolicyViolation):
    """A spec names a connection it may not use (unknown, wrong kind, another tenant's, a host it does not
    cover) or an environment variable no connection declares. ``field`` is the spec field at fault."""

    def __init__(self, message: str, field: str = "connection"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ConnectionUse:
    """The connection a spec part resolved to, and the spec field that named it."""

    name: str
    connection: Connection
    field: str

    def secret(self) -> str:
        """The secret's current value; missing is a ``ConfigurationError`` that says where it should be."""
        conn = self.connection
        if conn.env is not None:
            value = os.environ.get(conn.env, "")
        else:
            assert conn.file is not None
            try:
                value = conn.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"connection {self.name!r}: cannot read its secret ({conn.where}): {exc.strerror}"
                ) from exc
        if not value:
            raise ConfigurationError(f"connection {self.name!r}: its secret ({conn.where}) is not set")
        register_secret(value)
        return value


def kind_of(part: ConnectionUser) -> ConnectionKind:
    return ConnectionKind.HTTP if isinstance(part, HttpSource) else ConnectionKind.POSTGRES


def _deprecated_field(part: ConnectionUser) -> tuple[str, str | None]:
    if isinstance(part, HttpSource):
        return "auth_env", part.auth_env
    return "dsn_env", part.dsn_env


def resolve_connection(
    part: ConnectionUser, connections: dict[str, Connection], *, tenant: str | None
) -> ConnectionUse | None:
    """The connection ``part`` uses, checked against the declarations (and ``tenant`` unless None);
    None for an http source that uses no credentials. Raises ``ConnectionPolicyError``."""
    kind = kind_of(part)
    old_field, variable = _deprecated_field(part)
    if part.connection is not None:
        return _checked(part, part.connection, connections, tenant, "connection")
    if variable is None:
        if kind is ConnectionKind.HTTP:
            return None
        return _checked(part, DEFAULT_CONNECTION, connections, tenant, "connection")
    # A spec from before connections: the variable must be one a declared connection reads.
    candidates = sorted(n for n, c in connections.items() if c.kind is kind and c.env == variable)
    if not candidates:
        raise ConnectionPolicyError(
            f"'{old_field}' may only name the variable of a declared {kind.value} connection, and no"
            f" connection reads {variable!r}: name a declared connection with 'connection' instead",
            old_field,
        )
    refusal: ConnectionPolicyError | None = None
    for name in candidates:
        try:
            return _checked(part, name, connections, tenant, old_field)
        except ConnectionPolicyError as exc:
            refusal = refusal or exc
    assert refusal is not None
    raise refusal


def _checked(
    part: ConnectionUser, name: str, connections: dict[str, Connection], tenant: str | None, field: str
) -> ConnectionUse:
    kind = kind_of(part)
    connection = connections.get(name)
    if connection is None:
        known = ", ".join(sorted(n for n, c in connections.items() if c.kind is kind)) or "none"
        raise ConnectionPolicyError(
            f"no {kind.value} connection named {name!r} is declared (declared: {known})", field
        )
    if connection.kind is not kind:
        raise ConnectionPolicyError(
            f"connection {name!r} holds a {connection.kind.value} secret, not a {kind.value} one", field
        )
    if tenant is not None and not connection.allows_tenant(tenant):
        raise ConnectionPolicyError(f"tenant {tenant!r} may not use connection {name!r}", field)
    if isinstance(part, HttpSource) and not connection.allows_url(part.url):
        raise ConnectionPolicyError(
            f"connection {name!r} may not send its credentials to the host of {part.url!r}"
            f" (its hosts: {', '.join(connection.hosts)})",
            field,
        )
    return ConnectionUse(name, connection, field)


def connection_issues(
    spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT
) -> list[SpecIssue]:
    """The policy rule: every connection the spec uses is declared, of its kind and allowed to ``tenant``.
    Secrets are not read here: the process validating need not hold them."""
    issues: list[SpecIssue] = []
    for where, part in (("source", spec.source), ("destination", spec.destination)):
        if isinstance(part, PostgresSource | PostgresDestination | HttpSource):
            try:
                resolve_connection(part, policy.connections, tenant=tenant)
            except ConnectionPolicyError as exc:
                issues.append(SpecIssue(f"{where}.{exc.field}", str(exc)))
    return issues


def connection_for(part: ConnectionUser, policy: PolicySettings | None = None) -> ConnectionUse | None:
    """Where a connector acts: the connection ``part`` uses (None: an http source without credentials).
    The policy is read from the environment unless given."""
    if policy is None:
        from shared.policy.settings import load_policy  # settings imports this module

        policy = load_policy()
    return resolve_connection(part, policy.connections, tenant=None)


def postgres_dsn(part: PostgresSource | PostgresDestination, policy: PolicySettings | None = None) -> str:
    """The DSN of the connection a PostgreSQL source or destination uses, checked to parse: libpq's parse
    error quotes the part it could not read, which may be the password, so it is never passed on."""
    use = connection_for(part, policy)
    assert use is not None  # a postgres part always resolves to a connection (``default`` at least)
    dsn = use.secret()
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigurationError(
            f"the DSN of connection {use.name!r} ({use.connection.where}) is malformed:"
            " fix the declared secret"
        ) from None  # not chained: the cause's text is the leak this avoids
    return dsn


def register_declared_secrets(policy: PolicySettings) -> None:
    """At start-up, for redaction: the current secret of every declared connection this process can read,
    so it is masked here even when this process never uses the connection itself."""
    for name, connection in policy.connections.items():
        try:
            ConnectionUse(name, connection, "connection").secret()
        except ConfigurationError:
            continue  # not available to this process: nothing here can leak it
