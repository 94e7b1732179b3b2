"""Settings of the gateway service (prefix ``AOETL_``).

Webhook sources and trigger rules come from ``AOETL_WEBHOOKS`` / ``AOETL_TRIGGERS`` (JSON) or from a YAML or
JSON file named by ``AOETL_GATEWAY_CONFIG`` with top-level ``webhooks:`` and ``triggers:`` keys (mount it
from a Kubernetes Secret: it holds the webhook secrets). Values given directly win over the file's.

Example file::

    webhooks:
      github: {scheme: github, secrets: ["<new, 16+ bytes>", "<old, 16+ bytes>"], replay_window_s: 259200}
      billing: {scheme: stripe, secrets: ["whsec_..."], tolerance_s: 300}
    triggers:
      - {source: github, event: push, definition: repo-sync, where: {ref: refs/heads/main},
         parameters: {commit: head_commit.id}}

Authentication of the REST API (every endpoint but the probes and the webhooks, which have signatures):
``AOETL_AUTH_API_KEYS=true`` accepts the API keys of the keys topic (``aoetl auth keys create``), and
``AOETL_OIDC_ISSUER`` / ``_AUDIENCE`` / ``_JWKS_URL`` accept the tokens of an OIDC provider
(``shared.auth.oidc``); both may be on. Secure by default: an API bound to anything but a loopback address
refuses to start (exit 2) unless one of them is on. On loopback without either, every API call is 401.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from shared.auth.oidc import OidcSettings
from shared.kafka.topics import DELIVERIES_RETENTION_MS
from shared.settings import ServiceSettings
from shared.triggers import TriggerRule
from shared.webhooks.sources import WebhookSettings


class GatewaySettings(ServiceSettings, WebhookSettings):
    """The service's settings plus the webhook sources (``shared.webhooks.sources``) and trigger rules."""

    config_file_keys: ClassVar[tuple[str, ...]] = ("webhooks", "triggers")

    connect_timeout_s: float = Field(5.0, gt=0, description="bound on one broker connectivity check")
    api_host: str = Field("127.0.0.1", description="where the HTTP API (webhooks, definitions, runs) listens")
    api_port: int = Field(8000, ge=0, le=65535, description="0 picks a free port (see api_port_file)")
    api_port_file: Path | None = Field(None, description="the bound API port is written here once listening")
    triggers: list[TriggerRule] = Field(default_factory=list)
    max_body_bytes: int = Field(1024 * 1024, ge=1, description="larger webhook bodies are answered 413")
    api_max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="larger bodies of every other endpoint are answered 413"
    )
    auth_api_keys: bool = Field(False, description="accept the API keys of the keys topic")
    auth_keys_max_staleness_s: float = Field(
        10.0, gt=0, description="API keys are refused (503) while the keys view is older than this"
    )
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    metrics_public: bool = Field(False, description="serve the API port's /metrics without a token")
    rate_limit_per_s: float = Field(20.0, gt=0, description="API calls per second per principal")
    rate_limit_burst: int = Field(40, ge=1, description="calls a principal may make at once")
    send_timeout_s: float = Field(10.0, gt=0, description="Kafka acknowledgement wait before answering 503")
    dedupe_capacity: int = Field(100_000, ge=1, description="acknowledged run ids remembered for replays")
    runs_capacity: int = Field(10_000, ge=1, description="runs kept in the in-memory status view")
    records_per_tenant: int = Field(
        1000, ge=1, description="alerts and dead letters kept per tenant for GET /alerts and /dead-letters"
    )
    history_s: int = Field(
        24 * 3600,
        ge=0,
        description="start-up reads requests, events, results, alerts and dead letters this far back",
    )
    delivery_memory_s: int = Field(
        DELIVERIES_RETENTION_MS // 1000,
        gt=0,
        le=DELIVERIES_RETENTION_MS // 1000,
        description="webhook deliveries are remembered this long (a copy within a source's replay window"
        " is a duplicate, after it is refused); at most the deliveries topic's retention",
    )
    console_stream_s: float = Field(
        30.0, ge=0, le=3600, description="the console's event streams end after this; browsers reconnect"
    )
    results_tenant_grace_s: float = Field(
        30.0,
        ge=0,
        le=300,
        description="GET /results waits at most this long per request for the tenant of a result's run",
    )
    delivery_capacity: int = Field(
        200_000, ge=1, description="most webhook deliveries remembered (the oldest are forgotten first)"
    )

    @model_validator(mode="after")
    def _triggers_name_known_sources(self) -> GatewaySettings:
        unknown = sorted({t.source for t in self.triggers} - set(self.webhooks))
        if unknown:
            raise ValueError(f"trigger rules name unknown webhook sources: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _deliveries_outlive_windows(self) -> GatewaySettings:
        # A copy must be remembered for as long as it could be answered or be authentic: else a replay
        # after the memory but within the window (or the timestamp tolerance) would start a second run.
        too_long = sorted(
            name
            for name, source in self.webhooks.items()
            if max(source.replay_window_s, source.tolerance_s) > self.delivery_memory_s
        )
        if too_long:
            raise ValueError(
                f"webhook sources {', '.join(too_long)}: replay_window_s and tolerance_s must not exceed"
                f" delivery_memory_s ({self.delivery_memory_s}s)"
            )
        return self

    @model_validator(mode="after")
    def _secure_by_default(self) -> GatewaySettings:
        if not self.authenticates and not is_loopback(self.api_host):
            raise ValueError(
                f"the API would listen on {self.api_host}, which is not a loopback address, with no"
                " authentication method: set AOETL_AUTH_API_KEYS=true (keys from `aoetl auth keys create`)"
                " and/or AOETL_OIDC_ISSUER, AOETL_OIDC_AUDIENCE and AOETL_OIDC_JWKS_URL, or listen on"
                " AOETL_API_HOST=127.0.0.1"
            )
        return self

    @property
    def authenticates(self) -> bool:
        """Some credential can be verified (else every API call but the probes and webhooks is 401)."""
        return self.auth_api_keys or self.oidc.enabled


def is_loopback(host: str) -> bool:
    """Only literal loopback addresses and 'localhost' count; any other name might resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
