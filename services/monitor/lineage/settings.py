"""Lineage settings (prefix ``AOETL_LINEAGE_``), nested in the monitor's as ``lineage``. The transport
itself is configured the OpenLineage way (``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG``,
``OPENLINEAGE__TRANSPORT__*``), read by the library; see ``services.monitor.lineage.tracker``."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.monitor.lineage.events import default_producer

OPENLINEAGE_VARIABLES = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG", "OPENLINEAGE__TRANSPORT__TYPE")


class LineageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AOETL_LINEAGE_", frozen=True, extra="ignore")

    enabled: bool | None = Field(None, description="unset: on when an OpenLineage transport is configured")
    namespace: str = Field("aoetl", min_length=1, description="the jobs' namespace (plus .<tenant>)")
    producer: str = Field(default_factory=default_producer, description="the events' producer URI")

    def is_enabled(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
            return False
        return any(os.environ.get(name) for name in OPENLINEAGE_VARIABLES)
