"""``aoetl webhook test SOURCE --payload FILE``: send one correctly signed delivery to a running gateway.

The scheme and secret come from the webhook settings this shell sees (``AOETL_WEBHOOKS`` or
``AOETL_GATEWAY_CONFIG``), or from ``--scheme`` / ``--secret``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated

import httpx
import typer

from aoetl.output import CliConsole
from shared.webhooks.headers import GITHUB_DELIVERY, GITHUB_EVENT
from shared.webhooks.signatures import Scheme, sign_github, sign_hmac, sign_standard, sign_stripe
from shared.webhooks.sources import WebhookSettings, WebhookSource

app = typer.Typer(help="Webhook tools.", no_args_is_help=True)
console = CliConsole()
err_console = CliConsole(stderr=True)

EXIT_REJECTED = 1
EXIT_USAGE = 2


def _configured(source: str) -> WebhookSource | None:
    try:
        return WebhookSettings().webhooks.get(source)
    except ValueError as exc:  # a broken local config should not stop a test with explicit options
        err_console.print(f"[yellow]ignoring webhook settings: {exc}[/]")
        return None


def signed_headers(
    config: WebhookSource, body: bytes, *, secret: str, delivery_id: str, event: str | None
) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if config.scheme is Scheme.GITHUB:
        headers |= sign_github(body, secret) | {GITHUB_DELIVERY: delivery_id, GITHUB_EVENT: event or "push"}
    elif config.scheme is Scheme.STRIPE:
        headers |= sign_stripe(body, secret)  # Stripe carries the event id and type in the body
    elif config.scheme is Scheme.STANDARD:
        headers |= sign_standard(body, secret, msg_id=delivery_id)
    else:
        headers |= sign_hmac(body, secret, header=config.signature_header)
        headers[config.delivery_id_header] = delivery_id
        if event and config.event_header:
            headers[config.event_header] = event
    return headers


@app.command("test")
def send_test(
    source: Annotated[str, typer.Argument(help="the webhook source name, as in /webhooks/{source}")],
    payload: Annotated[
        Path, typer.Option("--payload", help="JSON body to send", exists=True, dir_okay=False)
    ],
    url: Annotated[str, typer.Option("--url", envvar="AOETL_GATEWAY_URL")] = "http://127.0.0.1:8000",
    secret: Annotated[str | None, typer.Option("--secret", help="default: the source's first secret")] = None,
    scheme: Annotated[Scheme | None, typer.Option("--scheme", help="default: the configured scheme")] = None,
    event: Annotated[str | None, typer.Option("--event", help="event type (GitHub, generic HMAC)")] = None,
    delivery_id: Annotated[str | None, typer.Option("--delivery-id", help="default: a new UUID")] = None,
) -> None:
    """Sign PAYLOAD as SOURCE's sender would and POST it; print the gateway's answer."""
    body = payload.read_bytes()
    try:
        json.loads(body)
    except ValueError as exc:
        err_console.print(f"[red]{payload} is not JSON: {exc}[/]")
        raise typer.Exit(EXIT_USAGE) from exc
    configured = _configured(source)
    chosen = scheme or (configured.scheme if configured else None)
    key = secret or (configured.secret_values()[0] if configured else None)
    if chosen is None or key is None:
        err_console.print(f"[red]{source!r} is not configured here: give --scheme and --secret[/]")
        raise typer.Exit(EXIT_USAGE)
    config = (configured or WebhookSource(scheme=chosen, secrets=[key])).model_copy(update={"scheme": chosen})
    headers = signed_headers(
        config, body, secret=key, delivery_id=delivery_id or uuid.uuid4().hex, event=event
    )
    response = httpx.post(f"{url.rstrip('/')}/webhooks/{source}", content=body, headers=headers, timeout=30)
    console.print(f"{response.status_code} {response.reason_phrase}")
    if response.headers.get("content-type", "").startswith("application/json"):
        console.print_json(response.text)
    else:
        console.print(response.text)
    if response.status_code >= 300:
        raise typer.Exit(EXIT_REJECTED)
