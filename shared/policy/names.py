"""Names the system owns: a spec may not write them, read internal topics, or bring a run id that would
become an unsafe path.

* PostgreSQL destinations cannot be in the system's schema (``aoetl``: the sinks' ledger and dedupe
  tables) or in PostgreSQL's own (``pg_*``, ``information_schema``), whatever the mode: ``replace`` on the
  ledger would otherwise truncate it and make every batch count as never applied.
* A table name with ``__aoetl`` is reserved for the sinks' staging, retired and index names
  (``<table>__aoetl_<run hash>``): a destination with such a name could replace another run's staging.
* Topics with an internal prefix (``PolicySettings.internal_topic_prefixes``: ``aoetl.*`` with any suffix,
  the monitor's changelogs, Kafka's ``__*``) cannot be a kafka destination, a kafka source or a topic
  trigger: a spec could forge requests, results or dead letters, or read every tenant's events.
* A run id must be a short token of letters, digits and ``_.:-`` starting with a letter or digit, so that
  it is never ``.``/``..``, never holds a ``/``, and stays a single safe file or name component wherever it
  becomes one (the file sinks put it in a directory name).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared.policy.errors import PolicyViolation
from shared.policy.settings import PolicySettings
from shared.policy.tenancy import DEFAULT_TENANT
from shared.spec.loader import SpecIssue
from shared.spec.models import (
    DuckDBDestination,
    KafkaDestination,
    KafkaSource,
    PipelineSpec,
    PostgresDestination,
)

SYSTEM_SCHEMA = "aoetl"
RESERVED_TABLE_MARK = "__aoetl"
_POSTGRES_SCHEMAS = frozenset({SYSTEM_SCHEMA, "information_schema"})
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")


def split_table(table: str, default_schema: str = "public") -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or default_schema, name


def system_schema_problem(schema: str) -> str | None:
    """Why a schema is the system's or PostgreSQL's own (compared without case: a quoted ``"AOETL"`` is
    another schema, but refusing it costs nothing and no one needs it)."""
    lowered = schema.lower()
    if lowered in _POSTGRES_SCHEMAS or lowered.startswith("pg_"):
        return f"schema {schema!r} belongs to the system or to PostgreSQL"
    return None


def table_problem(table: str) -> str | None:
    """Why a destination table (``[schema.]name``) is one the system owns, or None."""
    schema, name = split_table(table)
    if RESERVED_TABLE_MARK in name.lower():
        return f"table names containing {RESERVED_TABLE_MARK!r} are reserved for the sinks' own tables"
    problem = system_schema_problem(schema)
    return f"cannot write {table!r}: {problem}" if problem else None


def topic_problem(topic: str, prefixes: Sequence[str]) -> str | None:
    for prefix in prefixes:
        if topic.startswith(prefix):
            return f"topic {topic!r} is internal to the system (prefix {prefix!r})"
    return None


def run_id_problem(run_id: str) -> str | None:
    if RUN_ID.match(run_id):
        return None
    return (
        "a run id is 1-200 letters, digits or '_.:-', starting with a letter or a digit"
        f" (got {run_id[:40]!r})"
    )


def require_safe_run_id(run_id: str) -> str:
    problem = run_id_problem(run_id)
    if problem:
        raise PolicyViolation(problem)
    return run_id


def require_table(table: str) -> None:
    problem = table_problem(table)
    if problem:
        raise PolicyViolation(problem)


def require_topic(topic: str, policy: PolicySettings) -> None:
    problem = topic_problem(topic, policy.internal_topic_prefixes)
    if problem:
        raise PolicyViolation(problem)


def check_names(spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT) -> list[SpecIssue]:
    """The policy rule: destination tables and topics, and the kafka source's topic (the same for every
    tenant)."""
    issues: list[SpecIssue] = []
    destination = spec.destination
    if isinstance(destination, PostgresDestination | DuckDBDestination):
        problem = table_problem(destination.table)
        if problem:
            issues.append(SpecIssue(f"destination.{destination.type}.table", problem))
    if isinstance(destination, KafkaDestination):
        problem = topic_problem(destination.topic, policy.internal_topic_prefixes)
        if problem:
            issues.append(SpecIssue("destination.kafka.topic", problem))
    if isinstance(spec.source, KafkaSource):
        problem = topic_problem(spec.source.topic, policy.internal_topic_prefixes)
        if problem:
            issues.append(SpecIssue("source.kafka.topic", problem))
    return issues
