"""The offset book of the topic readers (``shared.streaming.windows``), as the topic triggers and the
continuous pipelines use it: pure logic, explicit clocks, no Kafka."""

from __future__ import annotations

import pytest

from shared.streaming import OffsetWindows, WindowLimits

pytestmark = pytest.mark.unit

TOPIC = "orders.events"


# ------------------------------------------------------------------------- as topic-trigger windows
def test_a_window_closes_at_its_item_count_and_holds_back_its_first_offset():
    book: OffsetWindows[dict[str, int]] = OffsetWindows(WindowLimits(items=3))
    tp = (TOPIC, 0)
    book.add(tp, 10, None, 0, now=0.0)  # not kept: only advances the position
    book.add(tp, 11, {"n": 1}, 10, now=0.0)
    book.add(tp, 12, {"n": 2}, 10, now=0.0)
    assert book.closed == [] and book.offsets() == {tp: 11}, "the open window's first item stays uncommitted"
    book.add(tp, 13, {"n": 3}, 10, now=0.0)
    (window,) = book.closed
    assert (window.first_offset, window.last_offset, [e["n"] for e in window.items]) == (11, 13, [1, 2, 3])
    assert book.offsets() == {tp: 14}
    book.committed(book.offsets())
    assert book.closed == [] and book.held() == {tp: 14} and not book.uncommitted()


def test_a_window_closes_after_its_age_whichever_comes_first():
    book: OffsetWindows[dict[str, int]] = OffsetWindows(WindowLimits(items=100, max_age_s=2.0))
    book.add((TOPIC, 1), 0, {"n": 1}, 1, now=10.0)
    book.close_due(11.9)
    assert book.closed == [] and book.next_due() == 12.0
    assert book.wait(11.5, ceiling=5.0) == pytest.approx(0.5)
    book.close_due(12.0)
    assert [len(w.items) for w in book.closed] == [1]
    assert book.next_due() is None and book.wait(12.0, ceiling=5.0) == 5.0


def test_windows_are_forgotten_on_rewind_and_revocation():
    book: OffsetWindows[dict[str, int]] = OffsetWindows(WindowLimits(items=1))
    book.add((TOPIC, 0), 0, {"n": 1}, 1, now=0.0)
    book.add((TOPIC, 1), 0, {"n": 2}, 1, now=0.0)
    book.forget({(TOPIC, 0)})
    assert [w.partition for w in book.closed] == [1] and set(book.offsets()) == {(TOPIC, 1)}
    book.forget()
    assert book.closed == [] and book.offsets() == {} and not book.uncommitted()


def test_a_window_closes_early_rather_than_outgrow_its_output():
    book: OffsetWindows[dict[str, int]] = OffsetWindows(WindowLimits(items=1000, max_bytes=100))
    for offset in range(3):
        book.add((TOPIC, 0), offset, {"n": offset}, 40, now=0.0)
    assert [len(w.items) for w in book.closed] == [3]


# -------------------------------------------------------------------- as continuous-pipeline batches
def test_batches_close_at_linger_or_size_and_commit_past_unreadable_events():
    book: OffsetWindows[dict[str, int]] = OffsetWindows(WindowLimits(items=3, max_age_s=0.2))
    book.add(("t", 0), 5, None, 0, now=1.0)  # poison: no row, but its offset is consumed
    assert book.offsets() == {("t", 0): 6} and book.uncommitted()
    book.add(("t", 0), 6, {"a": 1}, 0, now=1.0)
    book.close_due(1.1)
    assert book.closed == [] and book.offsets() == {("t", 0): 6}
    assert book.wait(1.05, ceiling=0.5) == pytest.approx(0.15)
    for offset, a in enumerate((2, 3, 4)):
        book.add(("t", 1), offset, {"a": a}, 0, now=1.1)
    assert [w.tp for w in book.closed] == [("t", 1)], "a full partition closes at once"
    assert book.offsets() == {("t", 0): 6, ("t", 1): 3}, "the other partition's open batch is held back"
    book.close_due(1.25)
    assert [(w.tp, w.first_offset, w.last_offset) for w in book.closed] == [
        (("t", 1), 0, 2),
        (("t", 0), 6, 6),
    ]
    assert book.held() == {("t", 0): 5, ("t", 1): 0}
    book.committed(book.offsets())
    assert book.held() == {("t", 0): 7, ("t", 1): 3} and not book.uncommitted()


def test_close_all_hands_over_every_open_window():
    book: OffsetWindows[int] = OffsetWindows(WindowLimits(items=10, max_age_s=60))
    book.add(("t", 0), 0, 1, 0, now=0.0)
    book.add(("t", 1), 4, 2, 0, now=0.0)
    book.close_all()
    assert sorted(w.tp for w in book.closed) == [("t", 0), ("t", 1)]
    assert book.offsets() == {("t", 0): 1, ("t", 1): 5}
