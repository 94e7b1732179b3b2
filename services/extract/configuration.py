"""Settings of the extract service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import ProcessorSettings


class ExtractSettings(ProcessorSettings):
    group_id: str = Field("aoetl-extract", min_length=1)
    # one task can yield many MiB of batches: one task per transaction keeps transactions short
    max_batch: int = Field(1, ge=1)
    # Batches are Arrow IPC streams already LZ4-compressed per buffer; compressing them again in the
    # producer only burns CPU (measured: see bench/bench_pipeline.py in the issue notes).
    producer_compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "none"
