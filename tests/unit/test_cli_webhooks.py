"""``aoetl webhook test`` signs with the shared webhook library: what it sends passes the gateway's own
verification for every scheme, and it finds the configured sources in the same file the gateway reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.datastructures import Headers

from aoetl.commands.webhooks import signed_headers
from services.gateway.webhooks import read_delivery
from shared.webhooks.signatures import SignatureError
from shared.webhooks.sources import WebhookSettings, WebhookSource

pytestmark = pytest.mark.unit

BODY = b'{"id": "evt_1", "type": "invoice.paid"}'
SECRETS = {"github": "gh-secret", "stripe": "whsec_stripe", "standard": "whsec_c2VjcmV0LWtleQ==", "hmac": "k"}


@pytest.mark.parametrize("scheme", sorted(SECRETS))
def test_what_the_cli_signs_the_gateway_accepts(scheme: str) -> None:
    secret = SECRETS[scheme]
    source = WebhookSource.model_validate({"scheme": scheme, "secrets": [secret]})
    headers = signed_headers(source, BODY, secret=secret, delivery_id="d-1", event="push")
    delivery = read_delivery("sender", source, BODY, Headers(headers))
    expected_id = "evt_1" if scheme == "stripe" else "d-1"  # Stripe carries its id in the body
    assert delivery.delivery_id == expected_id
    with pytest.raises(SignatureError):  # and only with the right secret
        other = WebhookSource.model_validate({"scheme": scheme, "secrets": [_other(secret)]})
        read_delivery("sender", other, BODY, Headers(headers))


def _other(secret: str) -> str:
    return "whsec_b3RoZXIta2V5" if secret.startswith("whsec_") else secret + "-other"


def test_webhook_settings_read_the_gateway_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "webhooks:\n  github: {scheme: github, secrets: [alpha-secret-0001]}\n"
        "triggers:\n  - {source: github, event: push, definition: repo-sync}\n"
    )
    monkeypatch.setenv("AOETL_GATEWAY_CONFIG", str(config))
    settings = WebhookSettings()
    assert settings.webhooks["github"].secret_values() == ["alpha-secret-0001"]
    assert "alpha-secret-0001" not in settings.model_dump_json()  # secrets stay masked in any dump
