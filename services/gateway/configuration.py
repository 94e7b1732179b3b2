"""Settings of the gateway service (prefix ``AOETL_``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    connect_timeout_s: float = Field(5.0, gt=0, description="bound on one broker connectivity check")
