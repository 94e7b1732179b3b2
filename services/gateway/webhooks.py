"""From an HTTP delivery to a verified ``Delivery``: check the signature first (an unauthenticated body is
never parsed), then decode the JSON within limits (``shared.webhooks.payloads``) and find the delivery id
and event type where each sender puts them.

A delivery's *identity* is what recognises its copies (``Delivery.identity``), and it must be covered by
the signature, or a replay with a new id would pass for a new delivery:

* Stripe and Standard Webhooks sign their ids (Stripe's event id is in the body, Standard's
  ``webhook-id`` is part of the signed content): the identity is that id, so a sender's retry, re-signed
  with a new timestamp, is still the same delivery;
* GitHub and generic HMAC sign the body only; their delivery-id and event headers are not signed, so an
  attacker can change them at will. The identity is the SHA-256 of the signed body: byte-identical bodies
  are the same delivery whatever their headers say. (Two genuinely different events always differ in
  their bodies: senders put ids and times in them.)
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.gateway.exceptions import PayloadError
from shared.webhooks.headers import GITHUB_DELIVERY, GITHUB_EVENT, STANDARD_ID
from shared.webhooks.payloads import PayloadLimitError, decode_json
from shared.webhooks.signatures import Scheme, verify_github, verify_hmac, verify_standard, verify_stripe
from shared.webhooks.sources import WebhookSource

# uuid5 namespace of webhook run ids: the same (source, delivery, definition) always gives the same run id.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.gateway.webhook-run")
# Senders' ids are GUIDs or short tokens; a longer or unprintable one is not a delivery id but a payload.
MAX_DELIVERY_ID_CHARS = 200
MAX_EVENT_CHARS = 200
_SIGNED_ID_SCHEMES = (Scheme.STRIPE, Scheme.STANDARD)


@dataclass(frozen=True)
class Delivery:
    source: str
    delivery_id: str
    event: str | None
    body: bytes
    payload: Any
    identity: str

    @property
    def key(self) -> str:
        """The record key of this delivery in the deliveries topic (source names have no ':')."""
        return f"{self.source}:{self.identity}"

    def run_id(self, definition: str) -> str:
        return uuid.uuid5(RUN_ID_NAMESPACE, f"{self.source}\n{self.delivery_id}\n{definition}").hex


def verify(
    source: WebhookSource, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> None:
    """Raise ``SignatureError`` unless ``body`` was signed with one of the source's secrets."""
    secrets = source.secret_values()
    if source.scheme is Scheme.GITHUB:
        verify_github(body, headers, secrets)
    elif source.scheme is Scheme.STRIPE:
        verify_stripe(body, headers, secrets, tolerance_s=source.tolerance_s, now=now)
    elif source.scheme is Scheme.STANDARD:
        verify_standard(body, headers, secrets, tolerance_s=source.tolerance_s, now=now)
    else:
        verify_hmac(body, headers, secrets, header=source.signature_header)


def read_delivery(
    name: str, source: WebhookSource, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> Delivery:
    """Verify, then decode. ``headers`` must be case-insensitive (Starlette's are)."""
    verify(source, body, headers, now=now)
    try:
        payload = decode_json(body)
    except PayloadLimitError as exc:
        raise PayloadError(f"body refused: {exc}") from exc
    body_type = payload.get("type") if isinstance(payload, dict) else None
    if source.scheme is Scheme.GITHUB:
        delivery_id, event = headers.get(GITHUB_DELIVERY), headers.get(GITHUB_EVENT)
    elif source.scheme is Scheme.STRIPE:
        delivery_id = payload.get("id") if isinstance(payload, dict) else None
        event = body_type
    elif source.scheme is Scheme.STANDARD:
        delivery_id, event = headers.get(STANDARD_ID), body_type
    else:
        delivery_id = headers.get(source.delivery_id_header)
        event = headers.get(source.event_header) if source.event_header else None
        event = event or body_type
    if not isinstance(delivery_id, str) or not delivery_id.strip():
        raise PayloadError("the delivery carries no delivery id, so a replay could not be recognised")
    delivery_id = delivery_id.strip()
    if len(delivery_id) > MAX_DELIVERY_ID_CHARS or not delivery_id.isprintable():
        raise PayloadError(
            f"the delivery id is not a printable id of at most {MAX_DELIVERY_ID_CHARS} characters"
        )
    if isinstance(event, str) and (len(event) > MAX_EVENT_CHARS or not event.isprintable()):
        raise PayloadError(f"the event type is not a printable name of at most {MAX_EVENT_CHARS} characters")
    signed_id = source.scheme in _SIGNED_ID_SCHEMES
    return Delivery(
        source=name,
        delivery_id=delivery_id,
        event=event if isinstance(event, str) else None,
        body=body,
        payload=payload,
        identity=f"id:{delivery_id}" if signed_id else f"sha256:{hashlib.sha256(body).hexdigest()}",
    )
