"""The security messages: API keys (the compacted keys topic) and audit records (the audit topic).

``ApiKey`` never holds a key's secret, only its SHA-256 (``shared.auth.keys`` says why a fast hash is
right for a random 256-bit secret). A key is revoked by a new record for its key id with ``revoked_at``
set, not by a tombstone, so ``aoetl auth keys list`` still shows who revoked it and when; compaction keeps
that last record.

``AuditRecord`` says who did what to which object, with what outcome, through which door, in one tenant.
Every principal has a tenant (``shared.auth.roles.Principal``); the record carries it so a later,
tenant-isolated audit reader can filter on it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from shared.contracts.base import Contract, new_id, utcnow


class Role(StrEnum):
    """What a principal may do, each role including the ones before it."""

    VIEWER = "viewer"  # read runs, results, definitions
    OPERATOR = "operator"  # + submit and stop runs
    ADMIN = "admin"  # + definitions, triggers and keys


class AuditOutcome(StrEnum):
    ALLOWED = "ALLOWED"  # authorised and valid: written before the action is taken
    DENIED = "DENIED"  # the principal lacks the role: nothing was done
    REJECTED = "REJECTED"  # the request is invalid or names nothing: nothing was done
    FAILED = "FAILED"  # allowed, but the action could not be completed (e.g. Kafka did not acknowledge)


class AuditChannel(StrEnum):
    REST = "rest"  # the gateway's HTTP API, principal from a verified token
    CLI = "cli"  # the CLI writing to Kafka directly (the Kafka door), principal as the CLI knows it


class ApiKey(Contract):
    """One API key, in the compacted keys topic keyed by ``key_id``."""

    avro_name: ClassVar[str] = "io.aoetl.ApiKey"
    key_id: str = Field(description="public part of the key, also inside the key itself")
    tenant: str
    role: Role
    secret_sha256: str = Field(description="hex SHA-256 of the whole key; the key itself is never stored")
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = "unknown"
    description: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class AuditRecord(Contract):
    """One mutating call: who, tenant, action, object, outcome, time, request id."""

    avro_name: ClassVar[str] = "io.aoetl.AuditRecord"
    audit_id: str = Field(default_factory=new_id)
    at: datetime = Field(default_factory=utcnow)
    request_id: str
    channel: AuditChannel
    actor: str = Field(description="'key:<key id>', 'oidc:<subject>' or 'user:<OS user>' (CLI Kafka door)")
    key_id: str | None = None
    tenant: str
    role: Role | None = Field(None, description="the verified role; None where nothing verified it")
    action: str = Field(description="e.g. 'runs.submit', 'definitions.put', 'keys.revoke'")
    object: str = Field(description="what the action is about, e.g. 'definition/orders', 'run/<id>'")
    outcome: AuditOutcome
    reason: str | None = Field(None, description="why DENIED, REJECTED or FAILED")
