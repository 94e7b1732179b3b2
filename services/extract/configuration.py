"""Settings of the extract service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import KafkaCompression, ProcessorSettings


class ExtractSettings(ProcessorSettings):
    group_id: str = Field("aoetl-extract", min_length=1)
    # Batches are Arrow IPC streams already LZ4-compressed per buffer: compressing them again in the
    # producer costs CPU here, in the broker (it decompresses to validate) and in the consumer.
    producer_compression: KafkaCompression = "none"
    # Continuous pipelines: the longest a source event waits in a batch (the latency floor), and how
    # often an idle stream reports that it is alive (below the runs' stuck_after_s).
    stream_linger_ms: int = Field(
        200, ge=1, le=60_000, description="continuous runs: max wait to fill a batch"
    )
    stream_heartbeat_s: float = Field(
        30.0, gt=0, description="continuous runs: idle progress report interval"
    )
