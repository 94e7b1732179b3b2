"""What a finished run's result says about its data (PipelineResult v3): per quality rule, the rows it
checked and failed and what its failure did, and per destination, what was written where.

Bounded, because a result is one Kafka record per run whatever the data: at most ``MAX_SAMPLES`` sample
values per rule, each at most ``MAX_SAMPLE_CHARS`` characters (the transform cuts them, and the models
refuse more, so no writer can put a copy of the data into a result). A target names a table, a path or a
topic, never a connection: a DSN or its credentials must not reach a result; and a sample value that
happens to hold a secret this process knows is masked (``RedactedText``), as every text of a result is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from shared.contracts.base import Contract, RedactedText

MAX_SAMPLES = 5
MAX_SAMPLE_CHARS = 80


class RuleAction(StrEnum):
    """What a quality rule's failures did to the run."""

    PASSED = "PASSED"  # no row failed it
    WARNED = "WARNED"  # rows failed it and were loaded (on_fail: warn)
    QUARANTINED = "QUARANTINED"  # its failing rows went to dead letters (on_fail: quarantine)
    FAILED = "FAILED"  # it failed the run (on_fail: fail), or did until healing lowered it


class RuleOutcome(Contract):
    avro_name: ClassVar[str] = "io.aoetl.RuleOutcome"
    rule: str
    columns: list[str] = Field(default_factory=list, description="the columns the rule reads")
    rows_checked: int = Field(0, description="rows the rule was evaluated on, each batch counted once")
    rows_failed: int = Field(0, description="rows that failed it, each batch counted once")
    action: RuleAction
    samples: list[RedactedText] = Field(
        default_factory=list, max_length=MAX_SAMPLES, description="a few failing values, cut short"
    )


class WriteOutcome(Contract):
    avro_name: ClassVar[str] = "io.aoetl.WriteOutcome"
    destination: str = Field(description="the destination type: postgres, duckdb, parquet, jsonl, kafka")
    target: str = Field(description="the table, path or topic written; never a connection")
    rows: int = 0
    bytes: int | None = Field(None, description="bytes written, when the sink knows them")
