"""What the operator allows a pipeline spec to do: ``PolicySettings`` (environment prefix ``AOETL_POLICY_``).

Every process that checks or enforces the policy (orchestrator, gateway, extract, transform, load,
``aoetl validate``) reads the same variables, so a spec gets the same verdict wherever it is checked.

Files. Production default: no data root, so no file source or file destination is allowed at all until
the operator names the directories pipelines may read and write (``AOETL_POLICY_DATA_ROOTS``: a JSON list,
or paths separated by ``os.pathsep``). The local development tools (the dev stack's service supervisor,
the ``aoetl`` CLI and the test suite) put :func:`dev_data_roots` there when it is unset: the working
directory's ``data``, ``examples`` and ``.state`` folders and the system temp directory, which is where
``make demo``, the README examples and the tests keep their files. The working directory itself is not a
root: it holds the code, the virtualenv and any ``.env`` file, which no pipeline should read or overwrite.

Secrets and egress:

* ``AOETL_POLICY_CONNECTIONS``: JSON, connection name -> where its secret lives
  (``shared.policy.connections``). Unset, it declares one connection, ``default``: the PostgreSQL DSN in
  ``AOETL_POSTGRES_DSN``, for tenant ``default``. That keeps the dev stack, compose and the examples
  working, and reaches no variable a spec could not already reach by default before connections existed.
  Setting it replaces that default.
* ``AOETL_POLICY_HTTP_EGRESS_ALLOW``: hosts, addresses or networks (optionally ``:port``) that ``http``
  sources may reach although they are loopback, private or link-local (``shared.policy.egress``); a JSON
  list or comma-separated. Empty by default: only public addresses are reached.

The other limits are safe by default: PostgreSQL source statements are cancelled after
``postgres_statement_timeout_s``; the transform's DuckDB has no temp directory, a memory cap, a thread cap
and a time limit per batch.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from shared.errors import ConfigurationError
from shared.policy.connections import CONNECTION_NAME, Connection, default_connections
from shared.policy.egress import AllowEntry
from shared.policy.tenancy import DEFAULT_TENANT

__all__ = ["DEFAULT_TENANT", "PolicySettings", "load_policy"]

DATA_ROOTS_ENV = "AOETL_POLICY_DATA_ROOTS"
DEV_DATA_FOLDERS = ("data", "examples", ".state")

# Topics the system owns: its own (``aoetl.*`` with any suffix), the monitor's faust changelogs
# (``aoetl-monitor-*``), Kafka's internal topics (``__consumer_offsets``, ``__transaction_state``) and a
# Schema Registry's store. A spec that wrote them could forge requests, results or offsets.
INTERNAL_TOPIC_PREFIXES = ("aoetl.", "aoetl-", "__", "_schemas", "_confluent")


def _list_from_text(value: Any, separator: str) -> Any:
    """A JSON list, or items separated by ``separator`` (blank items dropped)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(separator) if part.strip()]
    return value


class PolicySettings(BaseSettings):
    """The spec policy's settings, frozen once loaded. Every field has a safe default; see the module
    docstring."""

    model_config = SettingsConfigDict(env_prefix="AOETL_POLICY_", frozen=True, extra="ignore")

    data_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        (), description="directories file sources and destinations may use; none = no file access"
    )
    internal_topic_prefixes: tuple[str, ...] = Field(
        INTERNAL_TOPIC_PREFIXES, description="topic name prefixes no spec or trigger may read or write"
    )
    postgres_statement_timeout_s: float = Field(
        300.0, gt=0, le=86_400, description="statement_timeout of every PostgreSQL source statement"
    )
    transform_memory_limit: str = Field(
        "1GB", pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", description="DuckDB memory_limit"
    )
    transform_threads: int = Field(2, ge=1, le=64, description="DuckDB threads of the transform")
    transform_timeout_s: float = Field(
        120.0, gt=0, le=86_400, description="longest one batch may spend in the transform's DuckDB"
    )
    connections: dict[Annotated[str, Field(pattern=CONNECTION_NAME)], Connection] = Field(
        default_factory=default_connections,
        description="JSON: name -> {kind, env | file, tenants, hosts}; the secrets specs may use by name",
    )
    http_egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts, IPs or CIDR networks, optionally :port, that http sources may reach even though"
        " they are not public (JSON list or comma-separated)",
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        return _list_from_text(value, os.pathsep)

    @field_validator("data_roots")
    @classmethod
    def _absolute_roots(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        # Symlinks resolved once here: every later check compares real paths with real paths.
        return tuple(Path(os.path.realpath(root.expanduser())) for root in roots)

    @field_validator("http_egress_allow", mode="before")
    @classmethod
    def _split_allow_list(cls, value: Any) -> Any:
        return _list_from_text(value, ",")

    @field_validator("http_egress_allow")
    @classmethod
    def _entries_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            AllowEntry.parse(entry)  # ValueError names the entry
        return value


def dev_data_roots(cwd: Path | None = None) -> tuple[Path, ...]:
    """The data roots of local development (see the module docstring)."""
    base = Path.cwd() if cwd is None else cwd
    return (*(base / folder for folder in DEV_DATA_FOLDERS), Path(tempfile.gettempdir()))


def dev_data_roots_env(cwd: Path | None = None) -> str:
    """:func:`dev_data_roots` as the value of ``AOETL_POLICY_DATA_ROOTS``."""
    return json.dumps([str(root) for root in dev_data_roots(cwd)])


def load_policy(**overrides: Any) -> PolicySettings:
    """The policy of this process, read from the environment (a bad value is a ``ConfigurationError``
    naming the variable). Called where a connector acts, so a test or an operator who changes the
    environment is seen without a restart: the policy is built again whenever an ``AOETL_`` variable
    changed, and otherwise shared (it is frozen). Building it takes ~1 ms of pydantic-settings work; the
    orchestrator asked for it three times per run, which was a tenth of its CPU with many small runs."""
    if overrides:
        return _build_policy(**overrides)
    return _policy_for(_aoetl_variables(), os.getcwd())  # relative roots resolve against the cwd


def _aoetl_variables() -> tuple[tuple[Any, Any], ...]:
    """The ``AOETL_`` variables, as the policy cache's key. Read from the bytes CPython's ``os.environ``
    keeps (``_data``, where every change to ``os.environ`` goes): going through ``os.environ`` decodes
    every variable of the process, ~50 us a call, paid three times per run by the orchestrator and the
    extract service (each file a connector opens asks for the data roots)."""
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):  # another Python's environ: the public, slower way
        return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("AOETL_")))
    return tuple(sorted((k, v) for k, v in raw.items() if k[:6].upper() == b"AOETL_"))


@functools.lru_cache(maxsize=8)
def _policy_for(variables: tuple[tuple[Any, Any], ...], cwd: str) -> PolicySettings:  # str or bytes
    # The arguments are only the cache key: the settings read os.environ, of which they are a snapshot.
    return _build_policy()


def _build_policy(**overrides: Any) -> PolicySettings:
    from shared.settings import load_settings  # here: shared.settings imports the Kafka package

    try:
        return load_settings(PolicySettings, **overrides)
    except SettingsError as exc:  # JSON that does not parse (the message names the field, not the value)
        raise ConfigurationError(f"invalid PolicySettings settings: {exc} (not valid JSON)") from None
