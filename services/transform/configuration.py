"""Settings of the transform service: ``TransformingSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import KafkaCompression, TransformingSettings


class TransformSettings(TransformingSettings):
    group_id: str = Field("aoetl-transform", min_length=1)
    # Batches are Arrow IPC streams already LZ4-compressed per buffer; compressing them again in the
    # producer only burns CPU (measured: see bench/bench_pipeline.py in the issue notes).
    producer_compression: KafkaCompression = "none"
