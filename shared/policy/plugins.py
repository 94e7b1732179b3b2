"""The policy for plugin spec sections: the fields a plugin declares (``shared.spec.plugins.Checked``) get
the rule the built-in fields of the same kind get.

A plugin is trusted code the operator installed, but a spec naming it is hostile input like any spec, so
its sections are checked here exactly as the built-ins are by the other rules: an input path (glob
allowed) and an output path inside the data roots (``files``), a URL to a public address or the egress
allow list (``egress``), a SQL query a single read-only SELECT (``sql``), a topic never an internal one
(``names``), a connection declared, of its kind, allowed to the tenant, and an http connection's hosts
covering every URL of the same section (``connections``). A declared field holds a string, None, or a
list of strings (each checked). Issues carry the field path: ``source.<type>.<field>``.

Where the plugin acts, it checks again (``shared.policy.files.confine`` / ``open_confined`` /
``create_confined``, ``egress.egress_client``, ``names.require_topic``) and reads a secret only through
:func:`plugin_connection`, which resolves the connection as validation did.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from shared.policy.connections import Connection, ConnectionKind, ConnectionUse
from shared.policy.egress import EgressPolicy
from shared.policy.errors import PolicyViolation
from shared.policy.files import confine, path_issue
from shared.policy.names import topic_problem
from shared.policy.settings import PolicySettings, load_policy
from shared.policy.sql import UnsafeQueryError, normalize_select
from shared.policy.tenancy import DEFAULT_TENANT
from shared.spec.loader import SpecIssue
from shared.spec.models import PipelineSpec
from shared.spec.plugins import Checked, plugin_sections

_CONNECTION_KINDS = {
    Checked.POSTGRES_CONNECTION: ConnectionKind.POSTGRES,
    Checked.HTTP_CONNECTION: ConnectionKind.HTTP,
}


def declared_fields(model: type[BaseModel]) -> dict[str, Checked]:
    """The fields of a plugin model that carry a ``Checked`` marker, and what they are."""
    out: dict[str, Checked] = {}
    for name, info in model.model_fields.items():
        for item in info.metadata:
            if isinstance(item, Checked):
                out[name] = item
    return out


def _values(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        yield from (v for v in value if isinstance(v, str))


def _problem(
    kind: Checked, value: str, section: BaseModel, policy: PolicySettings, tenant: str
) -> str | None:
    if kind is Checked.INPUT_PATH:
        return path_issue(value, policy.data_roots)
    if kind is Checked.OUTPUT_PATH:
        try:  # never expanded, so a wildcard in it is a literal character
            confine(value, policy.data_roots)
        except PolicyViolation as exc:
            return str(exc)
        return None
    if kind is Checked.URL:
        return EgressPolicy.from_settings(policy, subject="plugin URLs").check_url(value)
    if kind is Checked.SQL:
        try:
            normalize_select(value)
        except UnsafeQueryError as exc:
            return str(exc)
        return None
    if kind is Checked.TOPIC:
        return topic_problem(value, policy.internal_topic_prefixes)
    return _connection_problem(_CONNECTION_KINDS[kind], value, section, policy.connections, tenant)


def _connection_problem(
    kind: ConnectionKind,
    name: str,
    section: BaseModel,
    connections: dict[str, Connection],
    tenant: str | None,
) -> str | None:
    """Why ``section`` may not use connection ``name`` (None: it may); ``tenant`` None: any tenant."""
    connection = connections.get(name)
    if connection is None:
        known = ", ".join(sorted(n for n, c in connections.items() if c.kind is kind)) or "none"
        return f"no {kind.value} connection named {name!r} is declared (declared: {known})"
    if connection.kind is not kind:
        return f"connection {name!r} holds a {connection.kind.value} secret, not a {kind.value} one"
    if tenant is not None and not connection.allows_tenant(tenant):
        return f"tenant {tenant!r} may not use connection {name!r}"
    if kind is ConnectionKind.HTTP:
        for field, what in declared_fields(type(section)).items():
            if what is not Checked.URL:
                continue
            for url in _values(getattr(section, field)):
                if not connection.allows_url(url):
                    return (
                        f"connection {name!r} may not send its credentials to the host of {url!r}"
                        f" (its hosts: {', '.join(connection.hosts)})"
                    )
    return None


def plugin_target(destination: BaseModel) -> str:
    """What a plugin destination writes to, for a run's result: its first declared output path or topic
    (never a connection: what it holds is secret), else its type."""
    for field, kind in declared_fields(type(destination)).items():
        if kind in (Checked.OUTPUT_PATH, Checked.TOPIC):
            for value in _values(getattr(destination, field)):
                return value
    return str(getattr(destination, "type", ""))


def check_plugins(
    spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT
) -> list[SpecIssue]:
    """The policy rule: every declared field of every plugin section of the spec."""
    issues: list[SpecIssue] = []
    for where, section in plugin_sections(spec):
        for field, kind in declared_fields(type(section)).items():
            for value in _values(getattr(section, field)):
                problem = _problem(kind, value, section, policy, tenant)
                if problem:
                    issues.append(SpecIssue(f"{where}.{field}", problem))
    return issues


def plugin_connection(
    section: BaseModel, field: str, *, tenant: str | None = None, policy: PolicySettings | None = None
) -> ConnectionUse:
    """Where a plugin acts: the declared connection its ``field`` names (read its secret with
    ``.secret()``), checked as at validation; ``PolicyViolation`` when it may not be used. ``tenant`` None
    skips the tenant check (the run was admitted for its tenant already)."""
    kind = declared_fields(type(section)).get(field)
    if kind not in _CONNECTION_KINDS:
        raise PolicyViolation(f"field {field!r} is not declared a connection (shared.spec.plugins.Checked)")
    policy = policy or load_policy()
    name = getattr(section, field)
    problem = _connection_problem(_CONNECTION_KINDS[kind], name, section, policy.connections, tenant)
    if problem:
        raise PolicyViolation(problem)
    return ConnectionUse(name, policy.connections[name], field)
