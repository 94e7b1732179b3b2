"""HTTP header names of the webhook schemes: where each sender puts its signature, delivery id and event.

The gateway reads them (``services.gateway.webhooks``) and the CLI and tests write them when they sign a
delivery (``aoetl webhook test``), so both sides spell every name from this one list.
"""

from __future__ import annotations

from typing import Final

# GitHub: the signature over the body, the delivery's GUID and the event name.
GITHUB_SIGNATURE: Final = "X-Hub-Signature-256"
GITHUB_DELIVERY: Final = "X-GitHub-Delivery"
GITHUB_EVENT: Final = "X-GitHub-Event"
# Stripe: one header with the timestamp and the signatures; id and type are in the body.
STRIPE_SIGNATURE: Final = "Stripe-Signature"
# Standard Webhooks: the id, the timestamp and the signatures (the type is in the body).
STANDARD_ID: Final = "webhook-id"
STANDARD_TIMESTAMP: Final = "webhook-timestamp"
STANDARD_SIGNATURE: Final = "webhook-signature"
# Generic HMAC: defaults of a ``WebhookSource``; each source may name other headers.
DEFAULT_HMAC_HEADER: Final = "X-Signature-256"
DEFAULT_DELIVERY_ID_HEADER: Final = "X-Delivery-Id"
DEFAULT_EVENT_HEADER: Final = "X-Event-Type"
