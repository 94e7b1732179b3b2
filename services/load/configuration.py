"""Settings of the load service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ProcessorSettings


class LoadSettings(ProcessorSettings):
    group_id: str = Field("aoetl-load", min_length=1)
