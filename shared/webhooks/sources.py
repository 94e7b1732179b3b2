"""Webhook senders as settings: ``WebhookSource`` (scheme, secrets, headers) and ``WebhookSettings``.

``WebhookSettings`` (prefix ``AOETL_``) reads the sources from ``AOETL_WEBHOOKS`` (JSON) or from the YAML
or JSON file named by ``AOETL_GATEWAY_CONFIG`` (top-level ``webhooks:``; mount it from a Kubernetes Secret:
it holds the webhook secrets). Values given directly win over the file's. The gateway's settings extend it
(adding the file's ``triggers:``); the CLI reads it alone to sign a test delivery as a configured sender
would, without knowing anything else of the gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.roles import TENANT_PATTERN
from shared.contracts.base import DEFAULT_TENANT
from shared.webhooks.headers import DEFAULT_DELIVERY_ID_HEADER, DEFAULT_EVENT_HEADER, DEFAULT_HMAC_HEADER
from shared.webhooks.signatures import DEFAULT_TOLERANCE_S, Scheme, standard_key


class WebhookSource(BaseModel):
    """One sender of webhooks, reachable at ``POST /webhooks/{name}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Scheme
    secrets: list[SecretStr] = Field(min_length=1, description="all accepted; list several to rotate")
    tolerance_s: float = Field(DEFAULT_TOLERANCE_S, gt=0, description="timestamped schemes: max clock skew")
    signature_header: str = Field(DEFAULT_HMAC_HEADER, description="hmac scheme: header holding the digest")
    delivery_id_header: str = Field(
        DEFAULT_DELIVERY_ID_HEADER, description="hmac scheme: header naming the delivery"
    )
    event_header: str | None = Field(
        DEFAULT_EVENT_HEADER, description="hmac scheme: header naming the event type (else the body's 'type')"
    )
    tenant: str = Field(
        DEFAULT_TENANT,
        pattern=TENANT_PATTERN,
        description="whose sender it is: only that tenant's definitions' triggers match its deliveries",
    )

    @model_validator(mode="after")
    def _standard_secrets_decode(self) -> WebhookSource:
        if self.scheme is Scheme.STANDARD:
            for secret in self.secrets:
                standard_key(secret.get_secret_value())  # ValueError -> a readable settings error
        return self

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in self.secrets]


class WebhookSettings(BaseSettings):
    """The configured webhook sources, from the environment or the gateway config file."""

    model_config = SettingsConfigDict(env_prefix="AOETL_", frozen=True, extra="ignore")
    # The keys of the config file this class takes; a subclass that reads more of the file lists them.
    config_file_keys: ClassVar[tuple[str, ...]] = ("webhooks",)

    gateway_config: Path | None = Field(None, description="YAML/JSON file with webhooks and triggers")
    webhooks: dict[str, WebhookSource] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_config_file(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        path = data.get("gateway_config")
        if not path:
            return data
        file_values = read_config_file(Path(path))
        merged = dict(data)
        for key in cls.config_file_keys:
            if key in file_values and not merged.get(key):
                merged[key] = file_values[key]
        return merged


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read gateway config {path}: {exc.strerror}") from exc
    loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"gateway config {path} must be a mapping with 'webhooks' and 'triggers'")
    return loaded
