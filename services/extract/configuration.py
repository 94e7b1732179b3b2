"""Settings of the extract service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ProcessorSettings


class ExtractSettings(ProcessorSettings):
    group_id: str = Field("aoetl-extract", min_length=1)
    # one task can yield many MiB of batches: one task per transaction keeps transactions short
    max_batch: int = Field(1, ge=1)
