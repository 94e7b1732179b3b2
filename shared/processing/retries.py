"""Retrying a message that failed transiently, per partition: how long to back off, how often to try,
and which partitions wait. Pure bookkeeping with the clock passed in; the loop pauses, rewinds and
resumes the consumer from what this says.

A transient failure rewinds only its own partition to the failed message and pauses it for an
exponential backoff with jitter, so the other partitions keep flowing; after ``max_attempts`` failures of
the same message it is dead-lettered as transient (re-drivable) instead of stalling its partition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TP = tuple[str, int]


@dataclass(frozen=True)
class RetryPolicy:
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    max_attempts: int | None = 20  # then dead-letter; None retries forever

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based): "equal jitter", so retries of many instances
        spread out but none retries immediately."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** max(attempt - 1, 0))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def exhausted(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt >= self.max_attempts


@dataclass
class _Retry:
    offset: int
    attempts: int
    resume_at: float | None  # None once resumed


class PartitionRetries:
    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self._by_partition: dict[TP, _Retry] = {}

    def attempt(self, tp: TP, offset: int) -> int:
        """How many times handling the message at ``tp``@``offset`` failed transiently before."""
        retry = self._by_partition.get(tp)
        return retry.attempts if retry is not None and retry.offset == offset else 0

    def schedule(self, tp: TP, offset: int, attempts: int, now: float) -> float:
        """Record failure number ``attempts`` of that message; returns the backoff before its retry."""
        delay = self.policy.delay(attempts)
        self._by_partition[tp] = _Retry(offset, attempts, now + delay)
        return delay

    def due(self, now: float) -> list[TP]:
        """Paused partitions whose backoff is over (now counted as resumed)."""
        ready = [tp for tp, r in self._by_partition.items() if r.resume_at is not None and r.resume_at <= now]
        for tp in ready:
            self._by_partition[tp].resume_at = None
        return ready

    def wait(self, now: float, ceiling: float) -> float:
        """How long a poll may block before the next paused partition is due."""
        waiting = [r.resume_at for r in self._by_partition.values() if r.resume_at is not None]
        if not waiting:
            return ceiling
        return max(0.0, min(ceiling, min(waiting) - now))

    def forget(self, tps: set[TP]) -> list[TP]:
        """Revoked partitions: their next owner keeps its own count. Returns those still paused."""
        paused = [tp for tp in tps if tp in self._by_partition and self._by_partition[tp].resume_at]
        for tp in tps:
            self._by_partition.pop(tp, None)
        return paused

    def passed(self, tp: TP, next_offset: int) -> None:
        """``tp`` committed up to ``next_offset``: a failed message before it is done with."""
        retry = self._by_partition.get(tp)
        if retry is not None and next_offset > retry.offset:
            del self._by_partition[tp]
