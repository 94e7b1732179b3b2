"""From an HTTP delivery to a verified ``Delivery``: check the signature first (an unauthenticated body is
never parsed), then decode the JSON and find the delivery id and event type where each sender puts them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.gateway.exceptions import PayloadError
from shared.webhooks.headers import GITHUB_DELIVERY, GITHUB_EVENT, STANDARD_ID
from shared.webhooks.signatures import Scheme, verify_github, verify_hmac, verify_standard, verify_stripe
from shared.webhooks.sources import WebhookSource

# uuid5 namespace of webhook run ids: the same (source, delivery, definition) always gives the same run id.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "aoetl.gateway.webhook-run")


@dataclass(frozen=True)
class Delivery:
    source: str
    delivery_id: str
    event: str | None
    body: bytes
    payload: Any

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
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
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
    return Delivery(
        source=name,
        delivery_id=delivery_id.strip(),
        event=event if isinstance(event, str) else None,
        body=body,
        payload=payload,
    )
