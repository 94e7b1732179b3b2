"""Settings of the monitor service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ProcessorSettings


class MonitorSettings(ProcessorSettings):
    group_id: str = Field("aoetl-monitor", min_length=1)
    # small records, read-only except for alerts
    max_batch: int = Field(500, ge=1)
