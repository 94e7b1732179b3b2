"""How the tests reach Kafka: the plaintext session broker (the default), or the secured dev stack when
``AOETL_TEST_SECURE=1`` (``make test-secure``: the end-to-end suite once more, on a broker with TLS only,
SCRAM users and StandardAuthorizer's ACLs).

The e2e suite keeps passing broker addresses (``kafka_bootstrap``) around; what connects with one asks
this module how:

* ``operator_settings(bootstrap)``: the test's own clients (creating topics outside the system, feeding
  them, reading a destination, publishing a forged record): plaintext, or the stack's super user, which
  an operator's tooling is; so a test's own setup never fails on an ACL;
* ``SecuredSupervisor``: every service replica authenticates as its own principal (``User:<service>``),
  so the suite exercises exactly the grants of ``shared.kafka.acls``;
* ``cli_settings`` / ``cli_env``: the test's ``AoetlClient`` and CLI invocations are the ``cli`` user;
* ``provision(bootstrap, suffix)``: the ACLs of a deployment whose topics carry ``suffix`` (each e2e
  module runs on topics of its own).

Why a registry keyed by address rather than new fixtures: the suite's helpers (and the fault tests'
harness) take a bootstrap string; resolving it here keeps their signatures, so the secure run needs no
second copy of any test.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from aoetl.devstack import DevStack, ServiceProcess, ServiceSupervisor, StackEndpoints
from aoetl.devstack.kafka_security import provision as provision_acls
from shared.errors import ConfigurationError
from shared.kafka.acls import Principal
from shared.kafka.topics import Topics
from shared.settings import KafkaSettings

SECURE_ENV: Final = "AOETL_TEST_SECURE"

_SECURED: dict[str, DevStack] = {}  # the secured stacks of this session, by their client bootstrap


def secure_requested() -> bool:
    return os.environ.get(SECURE_ENV, "").strip().lower() in {"1", "true", "yes"}


@contextmanager
def secured_stack(state_dir: Path, timeout: float = 120.0) -> Iterator[StackEndpoints]:
    """The session's stack with a secured broker of its own (PostgreSQL may be a given one)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise ConfigurationError(f"{SECURE_ENV}=1 secures a broker of its own; unset KAFKA_BOOTSTRAP_SERVERS")
    stack = DevStack(state_dir, secure=True, external_postgres=os.environ.get("AOETL_POSTGRES_DSN") or None)
    try:
        endpoints = stack.up(timeout)
        _SECURED[endpoints.kafka_bootstrap] = stack
        yield endpoints
        # the whole suite ran as the services' own users: any refusal it did not provoke is a grant
        # missing from shared.kafka.acls (reported as an error of the last test's teardown)
        unexpected = {r for r in refusals(stack) if (r[0], r[2]) not in PROVOKED}
        assert not unexpected, "the broker refused (grants missing from shared.kafka.acls):\n" + "\n".join(
            sorted(map(str, unexpected))
        )
    finally:
        _SECURED.pop(stack.endpoints.kafka_bootstrap, None)
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def secured(bootstrap: str) -> DevStack | None:
    """The secured stack whose client address ``bootstrap`` is, None for a plaintext broker."""
    return _SECURED.get(bootstrap)


def operator_settings(bootstrap: str) -> KafkaSettings:
    """The test's own connection: plaintext, or the secured stack's super user."""
    stack = secured(bootstrap)
    return stack.kafka_settings if stack else KafkaSettings(bootstrap_servers=bootstrap)


def operator_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """``operator_settings`` as a confluent-kafka configuration, plus ``extra`` (dots as underscores)."""
    overrides = {key.replace("_", "."): value for key, value in extra.items()}
    return {**operator_settings(bootstrap).to_confluent(), **overrides}


def principal_settings(bootstrap: str, principal: Principal) -> KafkaSettings:
    """How ``principal`` connects: plaintext, or as its own SCRAM user (e.g. an in-process service)."""
    stack = secured(bootstrap)
    return stack.client_settings(principal) if stack else KafkaSettings(bootstrap_servers=bootstrap)


def cli_settings(bootstrap: str) -> KafkaSettings:
    return principal_settings(bootstrap, Principal.CLI)


def cli_env(bootstrap: str) -> dict[str, str]:
    """The ``AOETL_KAFKA_*`` variables of a CLI invocation (none on a plaintext broker)."""
    stack = secured(bootstrap)
    return stack.kafka.security.client_env(Principal.CLI) if stack else {}


def provision(bootstrap: str, suffix: str) -> None:
    """Give every principal its grants on the topics and groups that carry ``suffix`` (secured only)."""
    stack = secured(bootstrap)
    if stack:
        provision_acls(stack.kafka_settings, stack.kafka.security, suffix)


class SecuredSupervisor(ServiceSupervisor):
    """Starts each replica with its own service's credentials (under the caller's variables, so a test
    can still plant a wrong password on purpose)."""

    def __init__(self, state_dir: Path, env: Mapping[str, str], stack: DevStack) -> None:
        super().__init__(state_dir, env)
        self._stack = stack

    def start(
        self, name: str, replicas: int = 1, *, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> list[ServiceProcess]:
        return super().start(name, replicas, env={**self._stack.service_env(name), **(env or {})}, **kwargs)


def supervisor(state_dir: Path, env: Mapping[str, str], bootstrap: str) -> ServiceSupervisor:
    stack = secured(bootstrap)
    return SecuredSupervisor(state_dir, env, stack) if stack else ServiceSupervisor(state_dir, env)


# The refusals tests/e2e/test_secure_stack.py provokes on purpose: (principal, resource).
PROVOKED: Final = frozenset(
    {
        ("User:transform", f"Topic:LITERAL:{Topics.RESULTS}"),
        ("User:load", f"Topic:LITERAL:{Topics.RESULTS}"),
        ("User:transform", f"Topic:LITERAL:{Topics.SCHEMAS}.unprovisioned"),
        ("User:cli", f"Topic:LITERAL:{Topics.AUDIT}"),
        # a tenant's user writing another tenant's request topic, and the shared one
        ("User:tenant-acme", f"Topic:LITERAL:{Topics.REQUESTS}.tenant.globex"),
        ("User:tenant-acme", f"Topic:LITERAL:{Topics.REQUESTS}"),
    }
)
_DENIED: Final = re.compile(
    r"Principal = (?P<who>\S+) is Denied [Oo]peration = (?P<op>\S+) .* on resource = (?P<res>\S+)"
)


def refusals(stack: DevStack) -> set[tuple[str, str, str]]:
    """Every (principal, operation, resource) the broker's authorizer refused so far."""
    path = stack.kafka.authorizer_log_path
    text = path.read_text() if path.exists() else ""
    return {(m["who"], m["op"], m["res"]) for m in _DENIED.finditer(text)}
