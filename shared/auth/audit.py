"""Building audit records, for the gateway (a verified principal) and the CLI's Kafka door.

The rule both follow (``AuditOutcome``): for a call that is allowed, the ALLOWED record is written *before*
the action, and the action is not taken unless Kafka acknowledged the record. So no mutation ever happens
without a durable audit record of it, and a call whose audit record cannot be written fails (503 on the
gateway, a non-zero exit on the CLI) with nothing done, which makes retrying it safe. A refused call
(DENIED, REJECTED) is recorded before it is answered. When an allowed action then fails, a second record
(FAILED) is written if it can be; the caller gets an error either way.
"""

from __future__ import annotations

import getpass
import re
import uuid
from typing import Final

from shared.auth.keys import key_id_of
from shared.auth.roles import Principal
from shared.contracts.security import AuditChannel, AuditOutcome, AuditRecord

REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_from(header: str | None) -> str:
    """The caller's request id when it is a sane one (so its logs and ours meet), else a new one."""
    return header if header is not None and REQUEST_ID.match(header) else uuid.uuid4().hex


def rest_record(
    principal: Principal,
    *,
    request_id: str,
    action: str,
    object: str,
    outcome: AuditOutcome,
    reason: str | None = None,
) -> AuditRecord:
    return AuditRecord(
        request_id=request_id,
        channel=AuditChannel.REST,
        actor=principal.subject,
        key_id=principal.key_id,
        tenant=principal.tenant,
        role=principal.role,
        action=action,
        object=object,
        outcome=outcome,
        reason=reason,
    )


def cli_record(
    *,
    tenant: str,
    token: str | None,
    request_id: str,
    action: str,
    object: str,
    outcome: AuditOutcome,
    reason: str | None = None,
) -> AuditRecord:
    """A CLI command on the Kafka door: nothing verified who runs it (the broker may have, by its own
    authentication), so the actor is the OS user, the key id the configured key's (if any), no role."""
    return AuditRecord(
        request_id=request_id,
        channel=AuditChannel.CLI,
        actor=f"user:{getpass.getuser()}",
        key_id=key_id_of(token) if token else None,
        tenant=tenant,
        role=None,
        action=action,
        object=object,
        outcome=outcome,
        reason=reason,
    )
