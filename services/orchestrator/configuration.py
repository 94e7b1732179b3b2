"""Settings of the orchestrator service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ProcessorSettings


class OrchestratorSettings(ProcessorSettings):
    group_id: str = Field("aoetl-orchestrator", min_length=1)
    # small records; a larger batch means fewer transactions
    max_batch: int = Field(100, ge=1)
