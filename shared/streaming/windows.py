"""The offset book of a topic reader: what it consumed and has not committed, per partition, grouped into
windows, and which offsets it may commit. One bookkeeper for the continuous pipelines (a window is a
batch being filled) and the topic triggers (a window is a run's events). No I/O, clock passed in.

Per partition the book knows ``base`` (the first offset consumed and not committed), ``position`` (the
next offset to consume) and at most one *open* window. An accepted item joins the open window (opening
one at its offset); a window *closes* at ``limits.items`` items, at ``limits.max_bytes``, or
``limits.max_age_s`` after its first item, and waits in ``closed`` until the caller commits what it
produced from it. What may be committed for a partition is the first offset of its open window, or its
position when none is open: after a crash an open window is formed again from its first item, and a
committed one never is. Offsets of items not accepted (unmatched or unreadable events) just advance the
position, so they are committed with the next commit.

A window also keeps the trace headers of its first item that carried a trace (``trace``), when its reader
passes them: a topic trigger's run continues the trace of the event that started it (``shared.tracing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shared.kafka.types import Headers

T = TypeVar("T")
TP = tuple[str, int]


@dataclass(frozen=True)
class WindowLimits:
    items: int  # close at this many items
    max_age_s: float | None = None  # close this long after the first item
    max_bytes: int | None = None  # close before the window outgrows what one output may carry


@dataclass
class Window(Generic[T]):
    tp: TP
    first_offset: int
    opened_at: float
    last_offset: int = -1
    items: list[T] = field(default_factory=list)
    size: int = 0
    trace: Headers | None = None  # the headers of the first item that carried a trace context

    @property
    def partition(self) -> int:
        return self.tp[1]


@dataclass
class _Partition(Generic[T]):
    base: int
    position: int
    open: Window[T] | None = None


class OffsetWindows(Generic[T]):
    def __init__(self, limits: WindowLimits):
        self.limits = limits
        self._parts: dict[TP, _Partition[T]] = {}
        self.closed: list[Window[T]] = []

    # --------------------------------------------------------------------------------- consuming
    def add(
        self, tp: TP, offset: int, item: T | None, size: int, now: float, trace: Headers | None = None
    ) -> None:
        """One consumed record; ``item`` None for one that is not kept (it only advances the position);
        ``trace``: the record's headers when they carry a trace context."""
        part = self._parts.setdefault(tp, _Partition(base=offset, position=offset))
        part.position = offset + 1
        if item is None:
            return
        if part.open is None:
            part.open = Window(tp, offset, now)
        window = part.open
        window.items.append(item)
        window.size += size
        window.last_offset = offset
        if window.trace is None and trace:
            window.trace = trace
        full = len(window.items) >= self.limits.items
        if full or (self.limits.max_bytes is not None and window.size >= self.limits.max_bytes):
            self._close(part)

    def extend(self, tp: TP, offsets: Sequence[int], items: Sequence[T], now: float) -> None:
        """``add`` of consecutive records of one partition, every one kept (``offsets[i]`` is
        ``items[i]``'s), without a trace, with their sizes not counted: for a reader whose book has no
        ``max_bytes`` and that decodes a window only when it closes. The items join the open window in
        slices, so a poll of thousands of records costs a few list operations, not a call per record."""
        assert self.limits.max_bytes is None, "a byte limit needs each record's size: add() them"
        if not items:
            return
        part = self._parts.setdefault(tp, _Partition(base=offsets[0], position=offsets[0]))
        start = 0
        while start < len(items):
            if part.open is None:
                part.open = Window(tp, offsets[start], now)
            window = part.open
            end = min(len(items), start + self.limits.items - len(window.items))
            window.items.extend(items[start:end])
            window.last_offset = offsets[end - 1]
            if len(window.items) >= self.limits.items:
                self._close(part)
            start = end
        part.position = offsets[-1] + 1

    def close_due(self, now: float) -> None:
        """Close the windows whose age limit passed."""
        age = self.limits.max_age_s
        if age is None:
            return
        for part in self._parts.values():
            if part.open is not None and now - part.open.opened_at >= age:
                self._close(part)

    def close_all(self) -> None:
        """Close every open window (a reader handing over what it read, at once)."""
        for part in self._parts.values():
            if part.open is not None:
                self._close(part)

    def _close(self, part: _Partition[T]) -> None:
        assert part.open is not None
        self.closed.append(part.open)
        part.open = None

    def next_due(self) -> float | None:
        """When the oldest open window reaches its age limit (in the clock's seconds), if any."""
        age = self.limits.max_age_s
        opened = [p.open.opened_at for p in self._parts.values() if p.open is not None]
        return min(opened) + age if age is not None and opened else None

    def wait(self, now: float, ceiling: float) -> float:
        """How long a poll may block before the next window is due."""
        due = self.next_due()
        return ceiling if due is None else max(0.0, min(ceiling, due - now))

    # -------------------------------------------------------------------------------- committing
    def offsets(self) -> dict[TP, int]:
        """Per partition, what may be committed: an open window's first item is not."""
        return {
            tp: part.open.first_offset if part.open is not None else part.position
            for tp, part in self._parts.items()
        }

    def uncommitted(self) -> bool:
        """Anything a commit would change: a closed window, or offsets past the committed base."""
        return bool(self.closed) or any(o > self._parts[tp].base for tp, o in self.offsets().items())

    def held(self) -> dict[TP, int]:
        """Per partition, the first offset consumed and not committed (where a rewind may go back to)."""
        return {tp: part.base for tp, part in self._parts.items()}

    def committed(self, offsets: dict[TP, int]) -> None:
        """``offsets`` and the outputs of ``closed`` were committed together."""
        self.closed = []
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].base = offset

    def forget(self, tps: set[TP] | None = None) -> None:
        """After a rewind (None: every partition) or a revocation: what was held is consumed again, by us
        or by the partition's new owner."""
        if tps is None:
            self._parts.clear()
            self.closed = []
            return
        for tp in tps:
            self._parts.pop(tp, None)
        self.closed = [w for w in self.closed if w.tp not in tps]

    def partitions(self) -> set[TP]:
        return set(self._parts)
