"""Webhook signature schemes: verification for the gateway, signing for the CLI, the bench and tests.
Both sides use this one module, so what the CLI signs is exactly what the gateway checks.

Every scheme is an HMAC-SHA256 over the raw body (plus, for the timestamped schemes, a timestamp and an id)
compared in constant time (``hmac.compare_digest``) against every configured secret, so a secret can be
rotated by listing the new one next to the old one until every sender has switched. Timestamped schemes
reject deliveries older *or newer* than the tolerance: a stale one may be a replay, a future one a clock
trick to stretch a captured signature's life.

* GitHub: ``X-Hub-Signature-256: sha256=<hex>`` over the body.
* Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`` over ``"{t}.{body}"``; several ``v1`` appear
  while Stripe rotates the endpoint secret. The secret (``whsec_...``) is used as given.
* Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64> [v1,<base64>]``
  over ``"{id}.{timestamp}.{body}"``; the key is the base64 part of ``whsec_<base64>``.
* Generic HMAC: ``<header>: [sha256=]<hex>`` over the body, header name configurable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

from shared.errors import TerminalError
from shared.webhooks.headers import (
    DEFAULT_HMAC_HEADER,
    GITHUB_SIGNATURE,
    STANDARD_ID,
    STANDARD_SIGNATURE,
    STANDARD_TIMESTAMP,
    STRIPE_SIGNATURE,
)

DEFAULT_TOLERANCE_S = 300
STANDARD_SECRET_PREFIX = "whsec_"


class Scheme(StrEnum):
    GITHUB = "github"
    STRIPE = "stripe"
    STANDARD = "standard"
    HMAC = "hmac"


class SignatureError(TerminalError):
    """A webhook delivery is not authentic (the gateway answers 401). ``reason`` is one of ``missing``,
    ``malformed``, ``mismatch``, ``stale`` or ``future``: a metrics label and a hint, never which secret
    was close."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


def _digest(key: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def _any_matches(candidates: Iterable[bytes], expected: Iterable[bytes]) -> bool:
    # Compare every pair even after a match: the time taken must not say which secret or which
    # signature matched.
    found = False
    expected_list = list(expected)
    for candidate in candidates:
        for digest in expected_list:
            found |= hmac.compare_digest(candidate, digest)
    return found


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError("missing", f"header {name} is missing")
    return value.strip()


def _from_hex(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise SignatureError("malformed", f"{what} is not hex") from None
    if len(raw) != hashlib.sha256().digest_size:
        raise SignatureError("malformed", f"{what} is not a SHA-256 digest")
    return raw


def _check_timestamp(raw: str, tolerance_s: float, now: float | None, what: str) -> int:
    try:
        timestamp = int(raw)
    except ValueError:
        raise SignatureError("malformed", f"{what} is not a unix timestamp") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise SignatureError("stale", f"{what} is older than {tolerance_s:g}s")
    if timestamp > current + tolerance_s:
        raise SignatureError("future", f"{what} is more than {tolerance_s:g}s in the future")
    return timestamp


# ------------------------------------------------------------------------------------------- GitHub
def verify_github(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    value = _header(headers, GITHUB_SIGNATURE)
    algorithm, _, hex_digest = value.partition("=")
    if algorithm != "sha256" or not hex_digest:
        raise SignatureError("malformed", f"{GITHUB_SIGNATURE} must be 'sha256=<hex>'")
    provided = _from_hex(hex_digest, GITHUB_SIGNATURE)
    if not _any_matches([provided], (_digest(s.encode(), body) for s in secrets)):
        raise SignatureError("mismatch", "signature does not match")


def sign_github(body: bytes, secret: str) -> dict[str, str]:
    return {GITHUB_SIGNATURE: "sha256=" + _digest(secret.encode(), body).hex()}


# ------------------------------------------------------------------------------------------- Stripe
def parse_stripe_header(value: str) -> tuple[str, list[str]]:
    """``(t, [v1 signatures])``; unknown schemes (``v0``) are ignored, as Stripe's own libraries do."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed", f"{STRIPE_SIGNATURE} item {item.strip()!r} is not key=value")
        if key == "t":
            timestamp = val
        elif key == "v1":
            signatures.append(val)
    if timestamp is None:
        raise SignatureError("malformed", f"{STRIPE_SIGNATURE} has no timestamp t=")
    if not signatures:
        raise SignatureError("malformed", f"{STRIPE_SIGNATURE} has no v1 signature")
    return timestamp, signatures


def verify_stripe(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    timestamp, signatures = parse_stripe_header(_header(headers, STRIPE_SIGNATURE))
    _check_timestamp(timestamp, tolerance_s, now, f"{STRIPE_SIGNATURE} t")
    provided = [_from_hex(sig, f"{STRIPE_SIGNATURE} v1") for sig in signatures]
    signed = timestamp.encode() + b"."
    if not _any_matches(provided, (_digest(s.encode(), signed, body) for s in secrets)):
        raise SignatureError("mismatch", "no v1 signature matches")


def sign_stripe(body: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    t = int(time.time()) if timestamp is None else timestamp
    signature = _digest(secret.encode(), f"{t}.".encode(), body).hex()
    return {STRIPE_SIGNATURE: f"t={t},v1={signature}"}


# -------------------------------------------------------------------------------- Standard Webhooks
def standard_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional, as in the reference libraries)."""
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        # A configuration problem, caught when settings load; here only as a last line of defence.
        raise ValueError("a Standard Webhooks secret must be whsec_<base64>") from exc


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    msg_id = _header(headers, STANDARD_ID)
    timestamp = _header(headers, STANDARD_TIMESTAMP)
    value = _header(headers, STANDARD_SIGNATURE)
    _check_timestamp(timestamp, tolerance_s, now, STANDARD_TIMESTAMP)
    provided: list[bytes] = []
    for item in value.split():
        version, sep, encoded = item.partition(",")
        if not sep:
            raise SignatureError("malformed", f"{STANDARD_SIGNATURE} item is not '<version>,<base64>'")
        if version != "v1":
            continue  # other versions (v1a: asymmetric) are not ours to check
        try:
            provided.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise SignatureError("malformed", f"{STANDARD_SIGNATURE} v1 is not base64") from None
    if not provided:
        raise SignatureError("malformed", f"{STANDARD_SIGNATURE} has no v1 signature")
    signed = f"{msg_id}.{timestamp}.".encode()
    if not _any_matches(provided, (_digest(standard_key(s), signed, body) for s in secrets)):
        raise SignatureError("mismatch", "no v1 signature matches")


def sign_standard(body: bytes, secret: str, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
    t = int(time.time()) if timestamp is None else timestamp
    signature = base64.b64encode(_digest(standard_key(secret), f"{msg_id}.{t}.".encode(), body)).decode()
    return {STANDARD_ID: msg_id, STANDARD_TIMESTAMP: str(t), STANDARD_SIGNATURE: f"v1,{signature}"}


# ------------------------------------------------------------------------------------- generic HMAC
def verify_hmac(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], *, header: str = DEFAULT_HMAC_HEADER
) -> None:
    value = _header(headers, header).removeprefix("sha256=")
    provided = _from_hex(value, header)
    if not _any_matches([provided], (_digest(s.encode(), body) for s in secrets)):
        raise SignatureError("mismatch", "signature does not match")


def sign_hmac(body: bytes, secret: str, *, header: str = DEFAULT_HMAC_HEADER) -> dict[str, str]:
    return {header: "sha256=" + _digest(secret.encode(), body).hex()}
