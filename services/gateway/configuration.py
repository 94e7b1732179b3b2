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
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

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
    send_timeout_s: float = Field(10.0, gt=0, description="Kafka acknowledgement wait before answering 503")
    dedupe_capacity: int = Field(100_000, ge=1, description="acknowledged run ids remembered for replays")
    runs_capacity: int = Field(10_000, ge=1, description="runs kept in the in-memory status view")
    history_s: int = Field(
        24 * 3600, ge=0, description="start-up reads requests/events/results this far back (dedupe, runs)"
    )
    delivery_memory_s: int = Field(
        DELIVERIES_RETENTION_MS // 1000,
        gt=0,
        le=DELIVERIES_RETENTION_MS // 1000,
        description="webhook deliveries are remembered this long (a copy within a source's replay window"
        " is a duplicate, after it is refused); at most the deliveries topic's retention",
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
