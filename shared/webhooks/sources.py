"""Webhook senders as settings: ``WebhookSource`` (scheme, secrets, headers) and ``WebhookSettings``.

``WebhookSettings`` (prefix ``AOETL_``) reads the sources from ``AOETL_WEBHOOKS`` (JSON) or from the YAML
or JSON file named by ``AOETL_GATEWAY_CONFIG`` (top-level ``webhooks:``; mount it from a Kubernetes Secret:
it holds the webhook secrets). Values given directly win over the file's. The gateway's settings extend it
(adding the file's ``triggers:``); the CLI reads it alone to sign a test delivery as a configured sender
would, without knowing anything else of the gateway.

Secrets must carry at least ``MIN_SECRET_BYTES`` (16 bytes, 128 bits) of key material, checked for every
scheme and every listed (rotated) secret when the settings load, so a gateway with an empty or short
secret refuses to start (exit 2, the source named) instead of accepting forgeable deliveries. Why 16: an
HMAC key is only as strong as its guessable part; 128 bits is the floor NIST SP 800-131A/800-107 set for
a MAC key today and what every sender generates (GitHub lets you pick, Stripe and Standard Webhooks give
24-32 random bytes). The check is on the settings collection, not on ``WebhookSource`` itself, because
the CLI builds a one-off source to sign a test delivery with whatever ``--secret`` it is given (a wrong or
short one included: that is how a 401 is tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth.roles import TENANT_PATTERN
from shared.contracts.base import DEFAULT_TENANT
from shared.webhooks.headers import DEFAULT_DELIVERY_ID_HEADER, DEFAULT_EVENT_HEADER, DEFAULT_HMAC_HEADER
from shared.webhooks.signatures import DEFAULT_TOLERANCE_S, STANDARD_SECRET_PREFIX, Scheme, standard_key

MIN_SECRET_BYTES = 16
# How long a copy of a delivery is answered as a duplicate of the first (the first answer again). Senders
# retry within it: Stripe for up to 3 days, Standard Webhooks (Svix) about 28 hours, GitHub's manual
# "redeliver" only for deliveries of the past 3 days. After it a copy is refused as a replay.
DEFAULT_REPLAY_WINDOW_S = 3 * 24 * 3600


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
    replay_window_s: float = Field(
        DEFAULT_REPLAY_WINDOW_S,
        gt=0,
        description="a copy of a delivery first seen less than this long ago is answered as a duplicate;"
        " later copies are refused (409)",
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

    def short_secrets(self) -> list[int]:
        """1-based positions of the secrets with less than ``MIN_SECRET_BYTES`` of key material."""
        return [
            i
            for i, secret in enumerate(self.secret_values(), 1)
            if key_bytes(self.scheme, secret) < MIN_SECRET_BYTES
        ]


def key_bytes(scheme: Scheme, secret: str) -> int:
    """How many bytes of key material a secret carries. Stripe's and Standard Webhooks' ``whsec_`` prefix
    is a constant anyone knows, so it does not count; a Standard secret counts its decoded key."""
    if scheme is Scheme.STANDARD:
        return len(standard_key(secret))
    if scheme is Scheme.STRIPE:
        secret = secret.removeprefix(STANDARD_SECRET_PREFIX)
    return len(secret.strip().encode())  # padding whitespace (a file's trailing newline) is no key


class WebhookSettings(BaseSettings):
    """The configured webhook sources, from the environment or the gateway config file."""

    model_config = SettingsConfigDict(env_prefix="AOETL_", frozen=True, extra="ignore")
    # The keys of the config file this class takes; a subclass that reads more of the file lists them.
    config_file_keys: ClassVar[tuple[str, ...]] = ("webhooks",)

    gateway_config: Path | None = Field(None, description="YAML/JSON file with webhooks and triggers")
    webhooks: dict[str, WebhookSource] = Field(default_factory=dict)

    @field_validator("webhooks")
    @classmethod
    def _secrets_are_long_enough(cls, sources: dict[str, WebhookSource]) -> dict[str, WebhookSource]:
        # Positions and lengths only: a secret's value never reaches an error message or a log.
        problems = [
            f"source {name!r} secret #{position} has less than {MIN_SECRET_BYTES} bytes of key material"
            for name, source in sorted(sources.items())
            for position in source.short_secrets()
        ]
        if problems:
            raise ValueError(
                "; ".join(problems)
                + " (generate one, e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return sources

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
