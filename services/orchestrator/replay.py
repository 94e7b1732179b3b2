"""Re-read the partitions an orchestrator instance was just given, from the beginning up to the group's
committed offsets, to rebuild its run state from Kafka alone.

Everything before a committed offset was already answered (the answers were committed in the same
transaction), so folding these messages with their outputs discarded reproduces the state exactly. Topics
are replayed in the given order (requests before events), because live a run's request is always handled
before any of its events exist.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from shared.contracts import Contract
from shared.errors import TransientError
from shared.kafka.clients import make_consumer
from shared.kafka.types import Serde
from shared.settings import KafkaSettings


class ReplayIncompleteError(TransientError):
    """The partitions could not be re-read up to the committed offsets in time; retried on reassignment."""


def replay_partitions(
    kafka: KafkaSettings,
    group_consumer: Any,
    partitions: Sequence[TopicPartition],
    serde: Serde,
    *,
    order: Sequence[tuple[str, type[Contract]]],
    apply: Callable[[Contract, datetime], None],
    timeout: float = 30.0,
) -> dict[str, int]:
    committed = group_consumer.committed(list(partitions), timeout=timeout)
    ends = {
        (tp.topic, tp.partition): tp.offset for tp in committed if tp.offset is not None and tp.offset > 0
    }
    counts: dict[str, int] = {}
    reader = make_consumer(kafka, f"aoetl-replay-{uuid.uuid4().hex}", partition_eof=True)
    try:
        for topic, model in order:
            todo = {p: end for (t, p), end in ends.items() if t == topic}
            if not todo:
                continue
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
            # A read_committed reader skips aborted records and markers, so the last offset before the end
            # may never be delivered: stop on reaching the end OR the partition's EOF.
            remaining = dict(todo)
            deadline = time.monotonic() + timeout
            while remaining:
                if time.monotonic() > deadline:
                    raise ReplayIncompleteError(f"replay of {topic} did not reach {remaining} in {timeout}s")
                msgs = reader.consume(500, 0.5)
                for msg in msgs:
                    err = msg.error()
                    part = msg.partition() or 0
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            remaining.pop(part, None)
                        continue
                    end = remaining.get(part)
                    if end is None or msg.offset() >= end:
                        remaining.pop(part, None)
                        continue
                    raw = msg.value()
                    if raw is None:
                        continue
                    try:
                        value = serde.decode(raw, model)
                    except Exception:  # poison was dead-lettered when it was first consumed
                        continue
                    ts = msg.timestamp()[1]
                    apply(value, datetime.fromtimestamp(ts / 1000, UTC) if ts > 0 else datetime.now(UTC))
                    counts[topic] = counts.get(topic, 0) + 1
            reader.unassign()
    finally:
        reader.close()
    return counts
