"""The continuous pipelines' reader variant (``shared.streaming.undecoded``): windows that hold records as
consumed and decode them when they close must commit what the per-record reader commits for the same
records — the same offsets, the same window bounds, the same events, every unreadable record
dead-lettered once. Pure logic with fake records; the real broker runs it in the e2e and fault tests."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from shared.avro import AvroSerde
from shared.settings import KafkaSettings
from shared.spec.models import StreamFormat
from shared.streaming import (
    OffsetWindows,
    ReaderConfig,
    TransactionalReader,
    UndecodedWindowReader,
    Window,
    WindowedTopicReader,
    WindowLimits,
    decode_event,
    decode_events,
)
from shared.streaming import reader as reader_module
from shared.streaming.decode import StreamDecodeError
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, FakeRecord

pytestmark = pytest.mark.unit

KAFKA = KafkaSettings(bootstrap_servers="fake:9092")
POISON = [b"not json", b"[1, 2]", b"", b'{"a": 1} trailing', b"\xff\xfe"]


def event_bytes(rng: random.Random, offset: int) -> bytes:
    if rng.random() < 0.1:
        return rng.choice(POISON)
    if rng.random() < 0.05:
        return b'{"n": NaN, "big": 123456789012345678901234567890}'  # orjson refuses, json reads
    return b'{"n": %d, "p": "x%d"}' % (offset, offset % 3)


def records(seed: int, count: int = 300) -> list[FakeRecord]:
    """Two partitions interleaved in runs, offsets with gaps (transaction markers take offsets)."""
    rng = random.Random(seed)
    next_offset = {0: 0, 1: 100}
    out: list[FakeRecord] = []
    while len(out) < count:
        partition = rng.choice((0, 1))
        for _ in range(rng.randint(1, 40)):
            offset = next_offset[partition]
            next_offset[partition] += rng.choice((1, 1, 1, 2))
            out.append(FakeRecord(offset, event_bytes(rng, offset), topic="t", partition=partition))
    return out


def polls(seed: int, items: list[FakeRecord]) -> list[list[FakeRecord]]:
    rng = random.Random(seed + 1000)
    cuts, start = [], 0
    while start < len(items):
        end = start + rng.randint(1, 60)
        cuts.append(items[start:end])
        start = end
    return cuts


# ---------------------------------------------------------------------------------------- the book
@pytest.mark.parametrize("seed", range(20))
def test_extending_the_book_by_slices_is_adding_each_record(seed: int) -> None:
    limits = WindowLimits(items=random.Random(seed).randint(1, 50), max_age_s=5.0)
    one_by_one: OffsetWindows[Any] = OffsetWindows(limits)
    in_slices: OffsetWindows[Any] = OffsetWindows(limits)
    for now, poll in enumerate(polls(seed, records(seed))):
        for record in poll:
            one_by_one.add(("t", record.partition()), record.offset(), record, 1, float(now))
        for partition in (0, 1):
            run = [r for r in poll if r.partition() == partition]
            in_slices.extend(("t", partition), [r.offset() for r in run], run, float(now))
        assert bounds(in_slices.closed) == bounds(one_by_one.closed)
        assert in_slices.offsets() == one_by_one.offsets() and in_slices.held() == one_by_one.held()
        in_slices.close_due(now + 0.5)
        one_by_one.close_due(now + 0.5)
        if now % 3 == 0:
            one_by_one.committed(one_by_one.offsets())
            in_slices.committed(in_slices.offsets())


def bounds(windows: list[Window[Any]]) -> list[tuple[Any, ...]]:
    """Across partitions the order of closing may differ (this test extends a poll partition by partition)."""
    return sorted(
        (w.tp, w.first_offset, w.last_offset, w.opened_at, [r.offset() for r in w.items]) for w in windows
    )


def test_a_book_with_a_byte_limit_refuses_slices() -> None:
    book: OffsetWindows[Any] = OffsetWindows(WindowLimits(items=10, max_bytes=100))
    with pytest.raises(AssertionError):
        book.extend(("t", 0), [0], [FakeRecord(0, b"{}")], 0.0)


# -------------------------------------------------------------------------------------- decoding
def test_decoding_many_events_is_decoding_each() -> None:
    raws: list[bytes | None] = [r.value() for r in records(7)] + [None]
    events, poison = decode_events(raws, StreamFormat.JSON, AvroSerde())
    expected, expected_poison = [], []
    for index, raw in enumerate(raws):
        try:
            expected.append(decode_event(raw, StreamFormat.JSON, AvroSerde()))
        except StreamDecodeError:
            expected_poison.append(index)
    assert [i for i, _ in poison] == expected_poison and expected_poison, "the mix has poison"
    assert repr(events) == repr(expected), "NaN compares unequal to itself: compare the text"
    clean = [b'{"a": 1}', b'{"a": 2, "b": [1]}']
    assert decode_events(clean, StreamFormat.JSON, AvroSerde()) == ([{"a": 1}, {"a": 2, "b": [1]}], [])


# ----------------------------------------------------------------------------------- the readers
class Collecting:
    """One output per closed window: its bounds and its events; dead letters as they come."""

    def __init__(self) -> None:
        config = ReaderConfig(
            kafka=KAFKA, group_id="g", transactional_id="r", topic="t", dead_letter_topic="dl"
        )
        self.init_args = ("collect", config, WindowLimits(items=25), StreamFormat.JSON, AvroSerde())


class PerRecord(WindowedTopicReader[dict[str, Any]]):
    def __init__(self) -> None:
        super().__init__(*Collecting().init_args)

    def keep(self, event: dict[str, Any]) -> dict[str, Any]:
        return event

    def outputs(self, closed: list[Window[dict[str, Any]]], reader: TransactionalReader) -> list[Any]:
        return [("out", w.partition, repr(event).encode()) for w in closed for event in w.items]


class Undecoded(UndecodedWindowReader):
    def __init__(self) -> None:
        super().__init__(*Collecting().init_args)

    def outputs(self, closed: list[Window[Any]], reader: TransactionalReader) -> list[Any]:
        out: list[Any] = []
        for window in closed:
            events, letters = self.decoded(window)
            out += [("out", window.partition, repr(event).encode()) for event in events] + letters
        return out


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def factory(settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        made.append(FakeProducer())
        return made[-1]

    monkeypatch.setattr("shared.kafka.transaction.make_producer", factory)
    return made


def drain(reader: WindowedTopicReader[Any], items: list[FakeRecord], monkeypatch: pytest.MonkeyPatch) -> Any:
    consumer = FakeConsumer()
    monkeypatch.setattr(reader_module, "make_consumer", lambda *a, **kw: consumer)
    transactional = TransactionalReader(reader.reader_config, stop=threading.Event())
    transactional.open()
    transactional.assigned = {("t", 0), ("t", 1)}
    for poll in polls(3, items):
        reader._take_all(poll)
        if reader.windows.closed:
            reader._commit(transactional)
    reader.windows.close_all()
    reader._commit(transactional)
    return transactional


def test_undecoded_windows_commit_what_per_record_windows_commit(
    producers: list[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    items = records(3)
    drain(PerRecord(), items, monkeypatch)
    drain(Undecoded(), items, monkeypatch)
    per_record, undecoded = producers[0], producers[1]

    def outs(producer: FakeProducer) -> dict[int, list[bytes]]:
        # windows close at other times (poison records count in undecoded ones), so only each partition's
        # order is the same
        return {p: [v for t, k, v in producer.produced if t == "out" and k == p] for p in (0, 1)}

    def letters(producer: FakeProducer) -> int:
        return [topic for topic, _, _ in producer.produced].count("dl")

    assert outs(undecoded) == outs(per_record), "the same events in each partition's order"
    assert all(outs(per_record).values())
    assert letters(undecoded) == letters(per_record) > 0, "each unreadable record dead-lettered once"
    assert sorted(undecoded.offsets_sent[-1]) == sorted(per_record.offsets_sent[-1]), "ends at one place"
