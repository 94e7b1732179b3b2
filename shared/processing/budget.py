"""How much of one poll goes into one transaction: many small messages share one, a large one gets its own.

A transaction costs the broker a fixed amount of work whatever it holds (AddPartitionsToTxn, the offsets,
EndTxn, a commit marker on every partition it wrote), so one per message made the broker the bottleneck of
many small runs: 1,000 three-row runs took 33 broker CPU-seconds with one extract task per transaction and
8 with up to 50 (bench/bench_concurrent.py, 41.0 s -> 13.0 s to all results). But a transaction also
hides its outputs from read_committed readers until it commits, so one holding several large splits would
stall the next stage until the last of them is read, and the pipeline would stop overlapping.

So the loop polls up to ``max_batch`` messages and commits the open transaction as soon as it has produced
``max_bytes`` or been open ``max_seconds``, then goes on with the rest of the poll in a new one: a split of
many MiB still commits alone, as when ``max_batch`` was 1, and small tasks, batches or events share one.
What is left of a poll after ``poll_seconds`` (or once the loop is asked to stop) goes back to the consumer
(seek to its first offset per partition) instead of holding up a rebalance or a shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransactionBudget:
    max_bytes: int = 4 * 1024 * 1024
    max_seconds: float = 0.1
    poll_seconds: float = 5.0

    def spent(self, produced_bytes: int, opened_at: float, now: float) -> bool:
        """The open transaction should commit now (the clock is passed in)."""
        return produced_bytes >= self.max_bytes or now - opened_at >= self.max_seconds

    def poll_expired(self, polled_at: float, now: float) -> bool:
        return now - polled_at >= self.poll_seconds
