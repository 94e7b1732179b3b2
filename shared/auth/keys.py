"""API keys: their format, how they are stored, and the ring every gateway replica checks them against.

Format: ``aoetl_<key id>_<secret>``. The prefix makes a leaked key recognisable (to secret scanners, and in
a log line someone pasted); the key id (16 hex digits, public) finds the record; the secret is 32 bytes
from ``secrets`` (256 bits), URL-safe base64.

Storage: the ``ApiKey`` record holds the SHA-256 of the whole key, never the key. A slow password KDF
(bcrypt, scrypt, Argon2) exists to make guessing a *low-entropy* password from its hash expensive; a
256-bit random secret cannot be guessed at any speed (2^256 candidates), so a slow KDF would add only
latency to every request and CPU for an attacker to spend on us. A fast hash keeps the one property that
matters: the keys topic, read by anyone who can read it, yields no usable key. An HMAC with a server-side
pepper would add nothing for such secrets and would need one more secret on every replica. Hashes are
compared in constant time.

Revocation: a new record for the key id with ``revoked_at`` set (``revoked``); the ring refuses it as
soon as it is applied. The ring also refuses *every* key while its view of the topic is older than
``max_staleness_s`` (``CredentialsUnavailable``, 503): so a revocation written at time R is refused by
every replica from R + max_staleness_s on, even by a replica cut off from Kafka, which would otherwise go
on accepting the revoked key for as long as it is cut off.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaException

from shared.auth.errors import CredentialsUnavailable
from shared.contracts import utcnow
from shared.contracts.security import ApiKey, Role
from shared.errors import TransientError
from shared.kafka.compacted import CompactedView
from shared.kafka.types import Serde
from shared.settings import KafkaSettings

KEY_PREFIX: Final = "aoetl_"
KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}$"
_KEY = re.compile(r"^aoetl_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``token`` is shown once to whoever created it; ``record`` is what is stored."""

    token: str
    record: ApiKey

    @property
    def key_id(self) -> str:
        return self.record.key_id


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The key id inside a well-formed key, else None (also for any other kind of token)."""
    match = _KEY.match(token)
    return match["key_id"] if match else None


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def issue_key(tenant: str, role: Role, *, created_by: str, description: str | None = None) -> IssuedKey:
    key_id = secrets.token_hex(8)
    token = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        tenant=tenant,
        role=role,
        secret_sha256=digest(token),
        created_by=created_by,
        description=description,
    )
    return IssuedKey(token, record)


def revoke(record: ApiKey, *, by: str) -> ApiKey:
    """The record that revokes ``record`` (already revoked: unchanged, so the first revocation stands)."""
    if record.revoked:
        return record
    return record.model_copy(update={"revoked_at": utcnow(), "revoked_by": by})


def matches(record: ApiKey, token: str) -> bool:
    return hmac.compare_digest(record.secret_sha256, digest(token))


class KeyRing:
    """The keys topic as a dict (last record per key id; a tombstone deletes), plus how fresh it is.

    Fed by whoever follows the topic (the gateway's bus): ``apply`` per record, ``confirm_fresh(t)`` once
    every record written before monotonic time ``t`` has been applied. Thread-safe, so a follower thread
    and request handlers may share it."""

    def __init__(self, max_staleness_s: float, *, clock: Callable[[], float] = time.monotonic):
        self.max_staleness_s = max_staleness_s
        self._clock = clock
        self._by_id: dict[str, ApiKey] = {}
        self._fresh_as_of: float | None = None
        self._lock = threading.Lock()

    def apply(self, key_id: str, record: ApiKey | None) -> None:
        with self._lock:
            if record is None:
                self._by_id.pop(key_id, None)
            else:
                self._by_id[key_id] = record

    def clear(self) -> None:
        """Forget everything, freshness included (the topic is about to be read again from the start: until
        then a valid key must get 503, not 401)."""
        with self._lock:
            self._by_id.clear()
            self._fresh_as_of = None

    def now(self) -> float:
        """The ring's clock: ``confirm_fresh`` takes times from it."""
        return self._clock()

    def confirm_fresh(self, as_of: float) -> None:
        with self._lock:
            if self._fresh_as_of is None or as_of > self._fresh_as_of:
                self._fresh_as_of = as_of

    def is_fresh(self) -> bool:
        with self._lock:
            return self._fresh_locked()

    def _fresh_locked(self) -> bool:
        return self._fresh_as_of is not None and self._clock() - self._fresh_as_of <= self.max_staleness_s

    def get(self, key_id: str) -> ApiKey | None:
        with self._lock:
            return self._by_id.get(key_id)

    def all(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda k: (k.tenant, k.created_at, k.key_id))

    def verify(self, token: str) -> ApiKey | None:
        """The valid, unrevoked record of ``token``; None when it is not one; ``CredentialsUnavailable``
        when the ring is too stale to say (checked first: a stale ring answers nothing, not even 'no')."""
        key_id = key_id_of(token)
        with self._lock:
            if not self._fresh_locked():
                raise CredentialsUnavailable("the list of API keys is not current; retry shortly")
            record = self._by_id.get(key_id) if key_id is not None else None
        if record is None or record.revoked or not matches(record, token):
            return None
        return record


def read_keys(kafka: KafkaSettings, topic: str, serde: Serde, *, timeout: float = 30.0) -> dict[str, ApiKey]:
    """The keys topic's current content, read to its end (for the CLI and the dev stack; the gateway follows
    the topic on its own bus). ``KeysUnreadable`` when it cannot be read."""
    view = CompactedView(kafka, topic, ApiKey, serde, timeout=timeout)
    try:
        view.start()
        # catch_up proves the view has everything written before now (start alone also returns when its
        # follower failed to connect, with nothing read)
        if not view.catch_up(timeout):
            raise KeysUnreadable(f"{topic} could not be read to its end within {timeout:.0f}s")
        return view.snapshot()
    except KafkaException as exc:
        raise KeysUnreadable(f"{topic} could not be read: {exc}") from exc
    finally:
        view.stop()


class KeysUnreadable(TransientError):
    """The keys topic could not be read to its end (Kafka unreachable or slow)."""
