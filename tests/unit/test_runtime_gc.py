"""A service's start-up objects are frozen out of the full collections (its start-up garbage is not), and
young collections come less often."""

from __future__ import annotations

import gc
import weakref

from shared.runtime import YOUNG_COLLECTION_THRESHOLD, prepare_garbage_collector


class _Node:
    def __init__(self) -> None:
        self.other: _Node = self


def test_start_up_objects_are_frozen_after_its_garbage_is_collected() -> None:
    kept = _Node()
    garbage = _Node()  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    thresholds = gc.get_threshold()
    try:
        prepare_garbage_collector()
        assert gone() is None  # collected first, so never kept frozen
        assert gc.get_freeze_count() > 0
        assert all(o is not kept for o in gc.get_objects())  # in no generation a collection scans
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
