"""A service's start-up objects are frozen out of the full collections, and its start-up garbage is not."""

from __future__ import annotations

import gc
import weakref

from shared.runtime import freeze_start_up_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node = self


def test_start_up_objects_are_frozen_after_its_garbage_is_collected() -> None:
    kept = _Node()
    garbage = _Node()  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    try:
        freeze_start_up_objects()
        assert gone() is None  # collected first, so never kept frozen
        assert gc.get_freeze_count() > 0
        assert all(o is not kept for o in gc.get_objects())  # in no generation a collection scans
    finally:
        gc.unfreeze()
