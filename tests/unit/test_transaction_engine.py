"""The one transaction engine (``shared.kafka.transaction``) and the topic-reader template built on it
(``shared.streaming.reader``), with fake clients behind the client Protocols: every protection of the
transaction (bounded calls, commit retry, abort-or-replace, fences: transient until they recur, rewind
to committed) and the
reader's commit/rollback bookkeeping. The same code runs against the real broker in the integration,
e2e and fault tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import shared.kafka.transaction as transaction_module
import shared.streaming.reader as reader_module
from shared.avro.serde import AvroSerde
from shared.errors import is_transient
from shared.kafka.transaction import (
    FenceCount,
    KafkaTransaction,
    ProducerFencedError,
    TransactionCallHungError,
    rewind_to_committed,
    transactional_id,
)
from shared.settings import KafkaSettings
from shared.spec.models import StreamFormat
from shared.streaming import ReaderConfig, TransactionalReader, Window, WindowedTopicReader, WindowLimits
from shared.streaming.supervisor import WorkerSupervisor
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, kafka_failure

pytestmark = pytest.mark.unit

KAFKA = KafkaSettings(bootstrap_servers="unused:9092")


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeProducer]]:
    made: list[FakeProducer] = []

    def factory(settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        made.append(FakeProducer())
        return made[-1]

    monkeypatch.setattr(transaction_module, "make_producer", factory)
    monkeypatch.setattr(transaction_module, "HUNG_CALL_GRACE_S", 0.05)
    yield made
    for producer in made:
        if producer.hang is not None:
            producer.hang.set()


def opened(**kw: Any) -> KafkaTransaction:
    txn = KafkaTransaction(
        KAFKA, "svc-i1", stop=threading.Event(), timeout=0.05, retry_delay=lambda _: 0.0, **kw
    )
    txn.open()
    return txn


OFFSETS = [TopicPartition("t", 0, 5)]


# --------------------------------------------------------------------------------- the transaction
def test_a_commit_sends_the_offsets_then_commits(producers: list[FakeProducer]) -> None:
    txn = opened()
    txn.begin()
    txn.produce("out", b"v", "k")
    txn.commit(OFFSETS, FakeConsumer())
    assert producers[0].calls == ["init", "begin", "produce", "send_offsets", "commit"] and txn.ready


def test_only_a_commit_that_lands_is_timed(producers: list[FakeProducer]) -> None:
    from shared import metrics

    def commits_timed() -> float:
        [count] = [
            sample.value
            for sample in metrics.TRANSACTION_COMMIT_SECONDS.collect()[0].samples
            if sample.name.endswith("_count")
        ]
        return count

    before = commits_timed()
    txn = opened()
    txn.begin()
    txn.commit(OFFSETS, FakeConsumer())
    assert commits_timed() == before + 1
    producers[0].failures["commit"] = [kafka_failure(fatal=True)]
    txn.begin()
    with pytest.raises(KafkaException):
        txn.commit([], None)
    assert commits_timed() == before + 1, "a failed commit is not a commit's duration"


def test_a_retriable_commit_error_is_retried_and_a_fatal_one_replaces_the_producer(
    producers: list[FakeProducer],
) -> None:
    txn = opened()
    producers[0].failures["commit"] = [kafka_failure(retriable=True)]
    txn.begin()
    txn.commit([], None)
    assert producers[0].calls.count("commit") == 2, "a retriable commit error is retried as is"
    producers[0].failures["commit"] = [kafka_failure(fatal=True)]
    txn.begin()
    with pytest.raises(KafkaException) as failed:
        txn.commit([], None)
    txn.fail(failed.value)
    assert len(producers) == 2 and "abort" not in producers[0].calls, "a fatal producer is replaced"


def test_a_hung_send_offsets_abandons_the_producer_without_touching_it(producers: list[FakeProducer]) -> None:
    txn = opened()
    producers[0].hang = threading.Event()
    txn.begin()
    with pytest.raises(TransactionCallHungError) as hung:
        txn.commit(OFFSETS, FakeConsumer())
    calls_before = list(producers[0].calls)
    txn.fail(hung.value)
    assert producers[0].calls == calls_before, "the hung producer is never called again"
    assert len(producers) == 2 and producers[1].calls == ["init"], "a new producer fences the old one"


def test_the_second_failure_in_a_row_replaces_the_producer_a_success_resets_the_count(
    producers: list[FakeProducer],
) -> None:
    txn = opened()
    txn.fail(kafka_failure())
    assert len(producers) == 1 and producers[0].calls[-1] == "abort", "a first failure aborts"
    txn.begin()
    txn.commit([], None)
    txn.fail(kafka_failure())
    assert len(producers) == 1, "a success in between resets the count"
    txn.fail(kafka_failure())
    assert len(producers) == 2, "two failures in a row: the producer may be stuck, replace it"


def test_a_producer_that_cannot_abort_is_replaced(producers: list[FakeProducer]) -> None:
    txn = opened()
    producers[0].failures["abort"] = [kafka_failure()]
    txn.discard()
    assert len(producers) == 2 and producers[1].calls == ["init"] and txn.ready


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fenced_commit(txn: KafkaTransaction, producer: FakeProducer) -> KafkaException:
    """A commit failing as librdkafka fails it after a coordinator failover: fatal ``_FENCED``."""
    producer.failures["commit"] = [kafka_failure(KafkaError._FENCED, fatal=True)]
    txn.begin()
    with pytest.raises(KafkaException) as failed:
        txn.commit(OFFSETS, FakeConsumer())
    return failed.value


def test_a_fence_replaces_the_producer_and_only_a_recurring_one_stops(producers: list[FakeProducer]) -> None:
    """A fence may be spurious (a coordinator failover): the batch is taken back and a new producer goes
    on; the third fence within the window means another live producer has our id, and stops us."""
    clock = Clock()
    txn = opened(fences=FenceCount("svc-i1", limit=3, window_s=60, clock=clock))
    txn.fail(fenced_commit(txn, producers[0]))
    assert len(producers) == 2 and producers[1].calls == ["init"] and txn.ready
    assert "abort" not in producers[0].calls, "a fenced producer accepts nothing more: never called again"
    txn.begin()
    txn.commit(OFFSETS, FakeConsumer())
    assert producers[1].calls[-1] == "commit", "the new producer commits the redone batch"
    clock.now += 30
    txn.fail(fenced_commit(txn, producers[1]))
    assert len(producers) == 3, "a second fence within the window: still replaced"
    clock.now += 31  # the first fence is out of the window now
    txn.fail(fenced_commit(txn, producers[2]))
    assert len(producers) == 4, "two fences within the window: replaced"
    clock.now += 1
    with pytest.raises(ProducerFencedError) as stopped:
        txn.fail(fenced_commit(txn, producers[3]))
    assert not is_transient(stopped.value), "recurring fences are terminal: the instance stops"
    assert len(producers) == 4


@pytest.mark.parametrize(
    "code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH]
)
def test_a_fenced_abort_or_init_replaces_the_producer_and_counts_as_a_fence(
    producers: list[FakeProducer], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    fenced_inits = [kafka_failure(code, fatal=True)]

    def factory(settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        producers.append(FakeProducer())
        if fenced_inits:
            producers[-1].failures["init"] = [fenced_inits.pop()]
        return producers[-1]

    txn = opened(fences=FenceCount("svc-i1", limit=3, window_s=60, clock=Clock()))
    monkeypatch.setattr(transaction_module, "make_producer", factory)
    producers[0].failures["abort"] = [kafka_failure(code, fatal=True)]
    txn.discard()  # fence 1: the abort finds the producer fenced; its replacement is fenced at init (2)
    assert [p.calls for p in producers[1:]] == [["init"], ["init"]] and txn.ready
    with pytest.raises(ProducerFencedError):
        txn.fail(kafka_failure(code))  # fence 3 within the window
    assert len(producers) == 3


def test_a_fatal_error_other_than_a_fence_at_init_is_raised(
    producers: list[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    txn = opened()
    broken = FakeProducer()
    broken.failures["init"] = [kafka_failure(KafkaError._FATAL, fatal=True)]
    monkeypatch.setattr(transaction_module, "make_producer", lambda settings, **kw: broken)
    with pytest.raises(KafkaException):
        txn.fail(kafka_failure(KafkaError._FATAL, fatal=True))
    assert not txn.ready


def test_rewind_goes_to_the_committed_offset_or_else_to_the_first_uncommitted() -> None:
    consumer = FakeConsumer(committed={("t", 0): 7})
    rewind_to_committed(consumer, {("t", 0): 3, ("t", 1): 9}, timeout=1)
    assert sorted(consumer.seeks) == [("t", 0, 7), ("t", 1, 9)]


def test_transactional_ids_keep_to_the_characters_kafka_takes_everywhere() -> None:
    assert transactional_id("extract-stream", "host:1", "orders/eu") == "extract-stream-host_1-orders_eu"


def test_two_deployments_on_one_broker_never_share_a_transactional_id() -> None:
    """Instances are named per deployment (``transform-0`` in each): without the topic suffix in the id,
    starting a second deployment fenced the first's producers (seen as make test-secure's stall)."""
    from shared.contracts import Stage
    from shared.processing.commit import TransactionalCommit, commit_mode_for
    from shared.processing.messages import LoopConfig

    def loop_id(suffix: str) -> str:
        config = LoopConfig("transform", Stage.TRANSFORM, "transform-0", "g", {}, topic_suffix=suffix)
        mode = commit_mode_for(KAFKA, config, threading.Event())
        assert isinstance(mode, TransactionalCommit)
        return mode.transaction.transactional_id

    assert loop_id("") == "transform-transform-0"  # a deployment without a suffix keeps its ids
    assert loop_id(".e2e1") != loop_id(".e2e2")
    assert loop_id(".e2e1").startswith("transform-")  # still inside the principal's prefixed grant
    assert transactional_id("extract-stream", "extract-0", "p", suffix=".a") != transactional_id(
        "extract-stream", "extract-0", "p", suffix=".b"
    )


# ------------------------------------------------------------------------------------ the reader
class Record:
    def __init__(self, partition: int, offset: int, value: bytes | None):
        self._p, self._o, self._v = partition, offset, value

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return self._v

    def error(self) -> None:
        return None


class CountingReader(WindowedTopicReader[dict[str, Any]]):
    """Windows of two events; one output per window naming its offsets."""

    def __init__(self) -> None:
        config = ReaderConfig(
            kafka=KAFKA, group_id="g", transactional_id="r", topic="t", dead_letter_topic="dl"
        )
        super().__init__("counting", config, WindowLimits(items=2), StreamFormat.JSON, AvroSerde())

    def keep(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return event if event.get("keep", True) else None

    def outputs(self, closed: list[Window[dict[str, Any]]], reader: TransactionalReader) -> list[Any]:
        return [("out", None, f"{w.tp[1]}:{w.first_offset}-{w.last_offset}".encode()) for w in closed]


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    fake = FakeConsumer()
    monkeypatch.setattr(reader_module, "make_consumer", lambda *a, **kw: fake)
    return fake


def test_a_reader_commits_closed_windows_and_dead_letters_with_the_offsets(
    producers: list[FakeProducer], consumer: FakeConsumer
) -> None:
    reader = CountingReader()
    transactional = TransactionalReader(reader.reader_config, stop=threading.Event())
    transactional.open()
    consumer.messages = [Record(0, 0, b'{"a": 1}'), Record(0, 1, b"not json"), Record(0, 2, b'{"a": 2}')]
    consumer.messages += [Record(1, 4, b'{"keep": false}'), Record(1, 5, b'{"a": 3}')]
    for message in transactional.poll(10, 0):
        reader._take(message)
    reader._commit(transactional)
    produced = producers[0].produced
    assert [v for t, _, v in produced if t == "out"] == [b"0:0-2"]
    assert [t for t, _, _ in produced].count("dl") == 1, "the unreadable event is dead-lettered once"
    assert reader.windows.held() == {("t", 0): 3, ("t", 1): 5}, "partition 1's open window is held back"


def test_a_failed_reader_commit_rewinds_and_drops_what_it_held(
    producers: list[FakeProducer], consumer: FakeConsumer
) -> None:
    reader = CountingReader()
    transactional = TransactionalReader(
        reader.reader_config, stop=threading.Event(), retry_delay=lambda _: 0.0
    )
    transactional.open()
    consumer.messages = [Record(0, 10, b'{"a": 1}'), Record(0, 11, b'{"a": 2}')]
    consumer.committed_offsets = {("t", 0): 10}
    for message in transactional.poll(10, 0):
        reader._take(message)
    producers[0].failures["commit"] = [kafka_failure()]
    reader._commit(transactional)
    assert consumer.seeks == [("t", 0, 10)] and reader.windows.partitions() == set()


# -------------------------------------------------------------------------------- the supervisor
class FakeWorker:
    def __init__(self, value: str) -> None:
        self.value, self.alive, self.stopped = value, False, False

    def start(self) -> None:
        self.alive = True

    def stop(self) -> None:
        self.stopped, self.alive = True, False

    def join(self, timeout: float) -> None:
        pass

    def is_alive(self) -> bool:
        return self.alive


def test_the_supervisor_keeps_one_worker_per_desired_key() -> None:
    started: list[FakeWorker] = []

    def start(key: str, value: str) -> FakeWorker:
        started.append(FakeWorker(value))
        return started[-1]

    supervisor: WorkerSupervisor[str, str] = WorkerSupervisor("test", dict, start)
    supervisor.reconcile({"a": "v1", "b": "v1"})
    supervisor.reconcile({"a": "v1", "b": "v1"})
    assert len(started) == 2, "nothing changed: nothing restarted"
    supervisor.reconcile({"a": "v2", "b": "v1"})
    assert started[0].stopped and started[2].value == "v2", "a changed value restarts its worker"
    started[1].alive = False  # died
    supervisor.reconcile({"a": "v2", "b": "v1"})
    assert started[3].value == "v1" and len(supervisor.workers) == 2, "a dead worker is replaced"
    supervisor.reconcile({})
    assert supervisor.workers == {} and all(w.stopped or not w.alive for w in started)
