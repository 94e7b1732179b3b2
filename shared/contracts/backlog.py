"""The stages' backlog as the broker says it: one ``ConsumerLag`` per consumer group on the compacted lag
topic (``Topics.LAG``, key group), the latest replacing the earlier ones.

Written by the monitor, which measures the lag of the services' groups anyway (``services.monitor.lag``:
committed offsets against the partitions' last stable offsets, without joining the groups), after each
check; read by the gateway for the console's continuous-pipelines page (services share nothing but
Kafka). A group the monitor could not measure keeps its previous record, whose ``at`` says how old it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.contracts.base import Contract, utcnow


class ConsumerLag(Contract):
    """One consumer group's backlog per topic (see the module docstring)."""

    avro_name: ClassVar[str] = "io.aoetl.ConsumerLag"
    group: str = Field(description="the consumer group, as the broker names it (with the topic suffix)")
    topics: dict[str, int] = Field(
        default_factory=dict, description="topic -> records not consumed yet, over the committed partitions"
    )
    at: datetime = Field(default_factory=utcnow, description="when the monitor measured it")
