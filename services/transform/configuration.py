"""Settings of the transform service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import KafkaCompression, ProcessorSettings


class TransformSettings(ProcessorSettings):
    group_id: str = Field("aoetl-transform", min_length=1)
    mask_salt: SecretStr = Field(
        SecretStr("aoetl-default-salt"),
        description="salt of mask(method=hash); set a secret one in production so hashes cannot be reversed",
    )
    # Batches are Arrow IPC streams already LZ4-compressed per buffer; compressing them again in the
    # producer only burns CPU (measured: see bench/bench_pipeline.py in the issue notes).
    producer_compression: KafkaCompression = "none"
