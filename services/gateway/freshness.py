"""How the gateway's bus confirms its key ring fresh (``AOETL_AUTH_KEYS_MAX_STALENESS_S``): every
``max_staleness / 4`` seconds it notes the time and the keys topic's end offsets, and once the follower has
read up to them, everything written before that time has been read, so the ring is fresh as of it
(``shared.auth.keys.KeyRing.confirm_fresh``). A replica cut off from Kafka stops confirming, and its ring
refuses keys once the last confirmation is too old: that bounds how long a revoked key is accepted.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.auth.keys import KeyRing


class KeysFreshness:
    """Confirms the key ring fresh as of a moment once everything written before it has been read."""

    def __init__(self, keys: KeyRing, partitions: list[TopicPartition]):
        self.keys = keys
        self.partitions = partitions
        self.every = keys.max_staleness_s / 4
        self._next = 0.0
        self._probe: tuple[float, dict[TopicPartition, int]] | None = None

    async def check(self, consumer: AIOKafkaConsumer) -> None:
        if not self.partitions:
            return
        now = self.keys.now()
        if self._probe is None and now >= self._next:
            # the time is taken before the end offsets: they include everything written before it
            self._probe = (now, await consumer.end_offsets(self.partitions))
            self._next = now + self.every
        if self._probe is not None:
            as_of, ends = self._probe
            for tp, end in ends.items():
                if await consumer.position(tp) < end:
                    return
            self.keys.confirm_fresh(as_of)
            self._probe = None
