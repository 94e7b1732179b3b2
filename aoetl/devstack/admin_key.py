"""The dev stack's local admin key: ``aoetl dev up`` makes sure the CLI holds an admin key of this stack,
so every command (and the gateway's REST API, which ``dev up --services`` starts with API keys on) works
on a fresh checkout with nothing to configure.

A key already held is kept when it is a valid, unrevoked admin key of this stack's keys topic; otherwise
a new one is issued for the default tenant through the Kafka door (its audit record first, as every
Kafka-door change), and returned for the caller to store in the CLI's configuration.
"""

from __future__ import annotations

import getpass
import uuid
from typing import Final

from aoetl.client import AoetlClient
from shared.auth.audit import cli_record
from shared.auth.keys import IssuedKey, issue_key, key_id_of, matches, read_keys
from shared.contracts import DEFAULT_TENANT, AuditOutcome, Role
from shared.kafka.topics import Topics
from shared.settings import ServiceSettings

# The default tenant, which the CLI's Kafka-door commands speak for when none is configured: everything made
# on the dev stack, by the CLI or through the gateway with this key, is one tenant's and visible to it.
LOCAL_TENANT: Final = DEFAULT_TENANT


def ensure_local_admin(settings: ServiceSettings, held_token: str | None) -> IssuedKey | None:
    """None when ``held_token`` already is a valid admin key of this stack, else a new, stored key."""
    client = AoetlClient(settings)
    try:
        keys = read_keys(settings.kafka, settings.topic(Topics.API_KEYS), client.serde)
        key_id = key_id_of(held_token) if held_token else None
        held = keys.get(key_id) if key_id else None
        if held and held_token and not held.revoked and held.role is Role.ADMIN and matches(held, held_token):
            return None
        issued = issue_key(
            LOCAL_TENANT,
            Role.ADMIN,
            created_by=f"user:{getpass.getuser()}",
            description="local admin of the dev stack (aoetl dev up)",
        )
        audit = cli_record(
            tenant=LOCAL_TENANT,
            token=None,
            request_id=uuid.uuid4().hex,
            action="keys.create",
            object=f"key/{issued.key_id}",
            outcome=AuditOutcome.ALLOWED,
        )
        client.publish(Topics.AUDIT, LOCAL_TENANT, audit)
        client.publish(Topics.API_KEYS, issued.key_id, issued.record)
        return issued
    finally:
        client.close()
