"""The gateway's replay memory: every webhook delivery it has seen, shared by all replicas through Kafka.

Why Kafka and why a claim: a delivery must start its runs at most once, even when the copies arrive
after a restart, at different replicas, or at the same moment. Each replica follows the deliveries topic
(``aoetl.deliveries``, keyed ``<source>:<identity>``, see ``services.gateway.webhooks``) into this book. A
replica that sees a delivery it does not remember first *claims* it: it appends a CLAIMED
``WebhookDelivery`` record (with the runs it plans) and waits until its own follower has read that
partition up to the record. Records with the same key share a partition, and a partition is one order
every replica reads alike, so the first claim of a key in the log is the delivery everywhere: that replica
requests the runs, every other copy is a duplicate. Once the runs are on the requests topic a STARTED
record with the same claim id says so (written after the sender was answered: ``record_started``).

A claim whose attempt failed (Kafka did not acknowledge a request in time: the sender got a 503 and will
retry) has no STARTED record. The retry takes it over and requests the claim's runs with the claim's run
ids, so it is the same run whoever requests it: at once when the failed attempt was this replica's (the
book knows its own claims), after ``attempt_s`` (+ clock skew) when another replica's attempt may still be
running.

Memory is bounded twice: a record is forgotten ``memory_s`` after it was first seen (the topic keeps it at
least that long: ``DELIVERIES_RETENTION_MS``), and the book holds at most ``capacity`` deliveries, the
oldest forgotten first (counted in ``aoetl_gateway_deliveries_forgotten_total``). Per delivery it keeps a
few strings and the run ids, not the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from shared.contracts import DeliveryRun, DeliveryState, WebhookDelivery

_log = logging.getLogger(__name__)

REMEMBERED = Gauge("aoetl_gateway_deliveries_remembered", "Webhook deliveries in the replay memory")
FORGOTTEN = Counter(
    "aoetl_gateway_deliveries_forgotten",
    "Deliveries dropped from the replay memory before their memory time, because it was full",
)
# Unfinished claims of this process kept for a quick takeover by the sender's retry (older ones wait the
# takeover delay like another replica's).
_OWN_UNFINISHED_KEPT = 10_000


@dataclass(slots=True)
class Remembered:
    """What the book keeps of a delivery: its first claim."""

    claim_id: str
    first_seen: float  # unix seconds, the claiming replica's clock
    delivery_id: str
    event: str | None
    runs: tuple[DeliveryRun, ...]
    started: bool

    @classmethod
    def of(cls, record: WebhookDelivery) -> Remembered:
        return cls(
            claim_id=record.claim_id,
            first_seen=record.first_seen_at.timestamp(),
            delivery_id=record.delivery_id,
            event=record.event,
            runs=tuple(record.runs),
            started=record.state is DeliveryState.STARTED,
        )


class DeliveryBook:
    """Deliveries by key, fed in log order (the bus's follower; the gateway's own records again, which is a
    no-op once the follower has read them)."""

    def __init__(self, memory_s: float, capacity: int):
        self.memory_s = memory_s
        self._capacity = capacity
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        self._started: dict[str, asyncio.Event] = {}
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # the lock, and how many use it
        self._own_unfinished: OrderedDict[str, None] = OrderedDict()
        self.waiting = 0  # callers parked behind another attempt at the same delivery in this process
        self._started_writes: set[asyncio.Task[object]] = set()  # STARTED records on their way

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, record: WebhookDelivery) -> None:
        key = record.key
        current = self._entries.get(key)
        if current is not None and current.claim_id == record.claim_id:
            if record.state is DeliveryState.STARTED and not current.started:
                current.started = True
                self._own_unfinished.pop(record.claim_id, None)
                if (event := self._started.get(key)) is not None:
                    event.set()
            return
        seen_at = record.first_seen_at.timestamp()
        if current is not None and seen_at - current.first_seen < self.memory_s:
            return  # a later claim of a remembered delivery: a copy that lost the race
        if current is not None:
            del self._entries[key]  # remembered beyond its memory time: this is a new first sighting
        self._entries[key] = Remembered.of(record)
        self._trim(seen_at)

    def get(self, key: str, now: float) -> Remembered | None:
        entry = self._entries.get(key)
        if entry is None or now - entry.first_seen >= self.memory_s:
            return None
        return entry

    def _trim(self, now: float) -> None:
        # Insertion order is log order, which is first-seen order up to the replicas' clock skew: the
        # front is the oldest, and ``get`` checks every entry's own age anyway.
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if now - oldest.first_seen < self.memory_s and len(self._entries) <= self._capacity:
                break
            if now - oldest.first_seen < self.memory_s:
                FORGOTTEN.inc()
                _log.warning(
                    "replay memory full (%d deliveries): forgetting the oldest early", self._capacity
                )
            del self._entries[key]
        REMEMBERED.set(len(self._entries))

    # ------------------------------------------------------------------------------ this process's turns
    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """One attempt per delivery at a time in this process: a second copy waits for the first's outcome
        instead of writing a claim of its own."""
        lock, users = self._turns.get(key, (asyncio.Lock(), 0))
        self._turns[key] = (lock, users + 1)
        parked = lock.locked()
        self.waiting += parked
        try:
            async with lock:
                self.waiting -= parked
                parked = False
                yield
        finally:
            self.waiting -= parked  # cancelled while parked
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def wait_started(self, key: str, timeout: float) -> bool:
        """True once the delivery's claim is STARTED (by any replica), False after ``timeout`` seconds."""
        entry = self._entries.get(key)
        if entry is None or entry.started:
            return entry is not None
        # One waiter per key at most: callers hold the key's turn.
        event = self._started.setdefault(key, asyncio.Event())
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._started.pop(key, None)

    def claimed_here(self, claim_id: str) -> None:
        """Note a claim this process wrote, until its STARTED record is applied. Attempts at one delivery
        take turns here, so a later turn finding such a claim unfinished knows its attempt gave up."""
        self._own_unfinished[claim_id] = None
        while len(self._own_unfinished) > _OWN_UNFINISHED_KEPT:
            self._own_unfinished.popitem(last=False)

    def abandoned_here(self, claim_id: str) -> bool:
        return claim_id in self._own_unfinished

    # --------------------------------------------------------------------------- STARTED records on the way
    def record_started(self, claim_id: str, write: Awaitable[object]) -> None:
        """Write a claim's STARTED record in the background (its runs are already requested). A failed
        write is only logged: the claim looks unfinished, and a copy's retry takes it over after the
        takeover delay, finding its runs in the requests ledger."""

        async def written() -> object:
            try:
                return await write
            except Exception as exc:  # every failure: the delivery's sender has had its answer already
                _log.warning("STARTED record of claim %s not written (%s): a copy takes over", claim_id, exc)
                return None

        task = asyncio.ensure_future(written())
        self._started_writes.add(task)
        task.add_done_callback(self._started_writes.discard)

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the STARTED records still on their way: a stopping
        gateway writes them before its producer closes."""
        pending = set(self._started_writes)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
