"""Settings of the extract service: ``TransformingSettings`` (prefix ``AOETL_``) with its own defaults."""

from __future__ import annotations

from pydantic import Field

from shared.settings import KafkaCompression, TransformingSettings


class ExtractSettings(TransformingSettings):
    group_id: str = Field("aoetl-extract", min_length=1)
    # Run the transform stage on the rows just read, in the read's own transaction, and hand load the
    # transformed batches (services.extract.handoff): a Kafka hop, an Arrow encode/decode and a
    # transaction fewer per batch; 1M rows into PostgreSQL took ~35% less CPU over all processes. Off,
    # the transform service's replicas transform every batch and scale apart from extract's: for
    # transforms much heavier than the read, or a source with fewer splits than transform needs replicas.
    chain_transform: bool = Field(
        True, description="transform each batch in extract instead of the transform service"
    )
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
