"""A topic reader whose windows hold the records as consumed, decoded only when a window closes.

Why: a continuous pipeline's extract is one Python thread per pipeline, and on a drain of small events the
per-record Python of ``WindowedTopicReader._take`` (a decode call, a book entry, a clock read, per record)
was most of its CPU. Here one poll's records join their partitions' windows in slices
(``OffsetWindows.extend``: a few list operations per partition and poll), and a closed window is decoded in
one ``decode_events`` call (for JSON one orjson comprehension). Measured on 200,000 small JSON events
through the book into Arrow tables: 2.4 -> 1.2 CPU-us per event.

What is committed is what the per-record reader commits for the same records: the book's offsets are the
same (a window starts at its first record and closes at ``limits.items`` records or its age), the events
decode exactly as ``decode_event`` decodes them, and an unreadable record is dead-lettered in the same
transaction as the window it was read in (the per-record reader dead-letters it with the next commit;
either way once, never lost). The windows count records, readable or not: a batch of a window holding a
poison record has one row fewer than ``limits.items``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import groupby
from typing import Any, cast

from shared.kafka.messages import KafkaMessage
from shared.streaming.decode import decode_events
from shared.streaming.reader import Encoded, WindowedTopicReader
from shared.streaming.windows import Window


class UndecodedWindowReader(WindowedTopicReader[KafkaMessage]):
    """Windows of undecoded records; ``decoded`` gives a closed window's events and the dead letters of
    its unreadable records. Subclasses implement ``outputs`` (and ``idle_outputs``) from those."""

    def _take_all(self, messages: Sequence[KafkaMessage]) -> None:
        if not messages:
            return
        now, topic = time.monotonic(), self.reader_config.topic  # a reader reads one topic
        # per record only the two calls the book needs (no checks: consumed records have both)
        for partition, run in groupby(messages, key=_partition):
            records = list(run)
            offsets = cast(list[int], [m.offset() for m in records])
            self.windows.extend((topic, partition), offsets, records, now)

    def keep(self, event: dict[str, Any]) -> KafkaMessage | None:
        raise TypeError("an undecoded window reader keeps records, not events: see _take_all")

    def decoded(self, window: Window[KafkaMessage]) -> tuple[list[dict[str, Any]], list[Encoded]]:
        """The window's events in offset order, and a dead letter for each record that is not one."""
        events, poison = decode_events([m.value() for m in window.items], self.format, self.serde)
        return events, [self._dead_letter(window.items[index], exc) for index, exc in poison]


def _partition(message: KafkaMessage) -> int:
    return cast(int, message.partition())
