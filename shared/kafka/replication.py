"""The one replication rule for the topics of ``shared.kafka.topics``: how many copies of each partition a
cluster keeps, and how many of them must have a record before the broker acknowledges it.

A cluster of three brokers or more keeps 3 replicas and ``min.insync.replicas=2``: with the producers'
``acks=all`` (``shared.kafka.clients``) an acknowledged record is on two brokers, so one broker may die or
restart without losing it, and writes go on while one is down. Fewer brokers cannot hold 3 copies, so they
keep one (a single dev or test broker, as it always has). The rule is derived from the broker count (the
cluster's own answer to a describe-cluster request) or from an explicit replication factor, never guessed
per topic, so every topic of one deployment has the same durability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FULL_REPLICATION: Final = 3
MIN_INSYNC_CONFIG: Final = "min.insync.replicas"


@dataclass(frozen=True)
class Replication:
    factor: int
    min_insync: int

    def __post_init__(self) -> None:
        if self.factor < 1 or not 1 <= self.min_insync <= self.factor:
            raise ValueError(f"replication factor {self.factor} with min.insync.replicas {self.min_insync}")

    @classmethod
    def for_factor(cls, factor: int) -> Replication:
        """An explicit factor: one replica may be missing when there are 3 or more (2 of 3 in sync)."""
        if factor < 1:
            raise ValueError(f"replication factor must be at least 1, not {factor}")
        return cls(factor, factor - 1 if factor >= FULL_REPLICATION else 1)

    @classmethod
    def for_brokers(cls, brokers: int) -> Replication:
        """What a cluster of ``brokers`` brokers gets: 3 replicas, 2 in sync from 3 brokers on, else 1."""
        if brokers < 1:
            raise ValueError(f"a cluster has at least one broker, not {brokers}")
        return cls.for_factor(FULL_REPLICATION if brokers >= FULL_REPLICATION else 1)

    def topic_config(self) -> dict[str, str]:
        """The configs a new topic gets from the rule: ``min.insync.replicas`` only when it differs from the
        broker default of 1, so a single broker's topics look exactly as they always did."""
        return {MIN_INSYNC_CONFIG: str(self.min_insync)} if self.min_insync > 1 else {}
