"""Settings of the gateway service (prefix ``AOETL_``).

Webhook sources and trigger rules come from ``AOETL_WEBHOOKS`` / ``AOETL_TRIGGERS`` (JSON) or from a YAML or
JSON file named by ``AOETL_GATEWAY_CONFIG`` with top-level ``webhooks:`` and ``triggers:`` keys (mount it
from a Kubernetes Secret: it holds the webhook secrets). Values given directly win over the file's.

Example file::

    webhooks:
      github: {scheme: github, secrets: ["new-secret", "old-secret"]}
      billing: {scheme: stripe, secrets: ["whsec_..."], tolerance_s: 300}
    triggers:
      - {source: github, event: push, definition: repo-sync, where: {ref: refs/heads/main},
         parameters: {commit: head_commit.id}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from services.gateway.signatures import DEFAULT_HMAC_HEADER, DEFAULT_TOLERANCE_S, Scheme, standard_key
from shared.settings import ServiceSettings
from shared.triggers import TriggerRule


class WebhookSource(BaseModel):
    """One sender of webhooks, reachable at ``POST /webhooks/{name}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Scheme
    secrets: list[SecretStr] = Field(min_length=1, description="all accepted; list several to rotate")
    tolerance_s: float = Field(DEFAULT_TOLERANCE_S, gt=0, description="timestamped schemes: max clock skew")
    signature_header: str = Field(DEFAULT_HMAC_HEADER, description="hmac scheme: header holding the digest")
    delivery_id_header: str = Field("X-Delivery-Id", description="hmac scheme: header naming the delivery")
    event_header: str | None = Field(
        "X-Event-Type", description="hmac scheme: header naming the event type (else the body's 'type')"
    )

    @model_validator(mode="after")
    def _standard_secrets_decode(self) -> WebhookSource:
        if self.scheme is Scheme.STANDARD:
            for secret in self.secrets:
                standard_key(secret.get_secret_value())  # ValueError -> a readable settings error
        return self

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in self.secrets]


class GatewaySettings(ServiceSettings):
    connect_timeout_s: float = Field(5.0, gt=0, description="bound on one broker connectivity check")
    api_host: str = Field("127.0.0.1", description="where the HTTP API (webhooks, definitions, runs) listens")
    api_port: int = Field(8000, ge=0, le=65535, description="0 picks a free port (see api_port_file)")
    api_port_file: Path | None = Field(None, description="the bound API port is written here once listening")
    gateway_config: Path | None = Field(None, description="YAML/JSON file with webhooks and triggers")
    webhooks: dict[str, WebhookSource] = Field(default_factory=dict)
    triggers: list[TriggerRule] = Field(default_factory=list)
    max_body_bytes: int = Field(1024 * 1024, ge=1, description="larger webhook bodies are answered 413")
    send_timeout_s: float = Field(10.0, gt=0, description="Kafka acknowledgement wait before answering 503")
    dedupe_capacity: int = Field(100_000, ge=1, description="acknowledged run ids remembered for replays")
    runs_capacity: int = Field(10_000, ge=1, description="runs kept in the in-memory status view")
    history_s: int = Field(
        24 * 3600, ge=0, description="start-up reads requests/events/results this far back (dedupe, runs)"
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_config_file(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        path = data.get("gateway_config")
        if not path:
            return data
        file_values = _read_config_file(Path(path))
        merged = dict(data)
        for key in ("webhooks", "triggers"):
            if key in file_values and not merged.get(key):
                merged[key] = file_values[key]
        return merged

    @model_validator(mode="after")
    def _triggers_name_known_sources(self) -> GatewaySettings:
        unknown = sorted({t.source for t in self.triggers} - set(self.webhooks))
        if unknown:
            raise ValueError(f"trigger rules name unknown webhook sources: {', '.join(unknown)}")
        return self


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read gateway config {path}: {exc.strerror}") from exc
    loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"gateway config {path} must be a mapping with 'webhooks' and 'triggers'")
    return loaded
