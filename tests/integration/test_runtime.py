"""The consume-process-produce loop against the real broker: exactly-once copies, poison messages to the
dead-letter topic, transient errors retried without duplicates or stalling other partitions, aborted
transactions invisible to read_committed readers, and the non-transactional (sink) mode."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from shared.avro import AvroSerde
from shared.contracts import Contract, DeadLetter, EventKind, RunEvent, Stage
from shared.errors import DataError, TransientError
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TopicSpec
from shared.processing import Handler, LoopConfig, MessageContext, Output, ProcessingLoop, RetryPolicy
from shared.settings import KafkaSettings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 3
SERDE = AvroSerde()
FAST_RETRY = RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=None)


class Crash(BaseException):
    """Stands for the process dying in the middle of a batch."""


@dataclass
class Topology:
    bootstrap: str
    name: str
    source: str
    sink: str
    dead_letters: str
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def loop(
        self, handler: Handler, *, instance: str = "i1", transactional: bool = True, **config: object
    ) -> ProcessingLoop:
        loop_config = LoopConfig(
            service=self.name,
            stage=Stage.TRANSFORM,
            instance_id=instance,
            group_id=f"{self.name}-group",
            input_types={self.source: RunEvent},
            dead_letter_topic=self.dead_letters,
            transactional=transactional,
            poll_timeout=0.2,
            **config,  # type: ignore[arg-type]
        )
        return ProcessingLoop(KafkaSettings(bootstrap_servers=self.bootstrap), loop_config, handler, SERDE)

    def start(self, loop: ProcessingLoop) -> threading.Event:
        stop = threading.Event()

        def run() -> None:
            try:
                loop.run(stop)
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return stop

    def stop(self, stop: threading.Event) -> None:
        stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "the loop did not stop"
        self.threads.clear()

    def copy(self) -> Handler:
        def handler(value: Contract, context: MessageContext) -> Sequence[Output]:
            return [Output(self.sink, context.key, value)]

        return handler

    baseline: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=lambda: samples())

    def metric(self, name: str, **labels: str) -> float:
        """What this topology added to a sample of the process-wide registry: series carry no service
        label (the scrape target names the service), and earlier tests of this process count there too."""
        key = (name, frozenset(labels.items()))
        return samples().get(key, 0.0) - self.baseline.get(key, 0.0)


def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
    }


@pytest.fixture
def topology(kafka_bootstrap: str) -> Iterator[Topology]:
    suffix = uuid.uuid4().hex[:10]
    t = Topology(kafka_bootstrap, f"rt-{suffix}", f"rt.in.{suffix}", f"rt.out.{suffix}", f"rt.dlq.{suffix}")
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [TopicSpec(name, PARTITIONS) for name in (t.source, t.sink, t.dead_letters)],
    )
    yield t
    for thread in t.threads:  # a failed test must not leave a loop consuming
        thread.join(timeout=0)


def event(n: int) -> RunEvent:
    return RunEvent(
        run_id=f"run-{n % 5}", kind=EventKind.TASK_STARTED, stage=Stage.EXTRACT, task_id=f"task-{n}"
    )


def produce(bootstrap: str, topic: str, records: Sequence[tuple[int, bytes]]) -> None:
    """(partition, value) pairs, in order; keys are the partition number."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition, value in records:
        producer.produce(topic, value=value, key=str(partition).encode(), partition=partition)
    assert producer.flush(30) == 0


def produce_events(bootstrap: str, topic: str, count: int) -> list[RunEvent]:
    events = [event(n) for n in range(count)]
    produce(bootstrap, topic, [(n % PARTITIONS, SERDE.encode(e)) for n, e in enumerate(events)])
    return events


def read(bootstrap: str, topic: str, expected: int, *, committed_only: bool = True) -> list[bytes]:
    """Every record of ``topic``: read until at least ``expected`` arrived, then until the topic stays
    quiet for a second, so duplicates beyond ``expected`` would be caught too."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    values: list[bytes] = []

    def enough() -> bool:
        values.extend(m.value() or b"" for m in consumer.consume(500, 0.5) if not m.error())
        return len(values) >= expected

    try:
        wait_until(enough, timeout=60, message=f"{expected} records on {topic}")
        while batch := consumer.consume(500, 1.0):
            values.extend(m.value() or b"" for m in batch if not m.error())
    finally:
        consumer.close()
    return values


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def ids(values: Sequence[bytes]) -> Counter[str]:
    return Counter(SERDE.decode(v, RunEvent).event_id for v in values)


def test_transactional_copy_is_exactly_once(topology: Topology) -> None:
    events = produce_events(topology.bootstrap, topology.source, 120)
    loop = topology.loop(topology.copy(), max_batch=25)
    stop = topology.start(loop)
    wait_until(loop.is_ready, timeout=60, message="loop ready")
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)

    assert not topology.errors
    assert ids(copied) == Counter(e.event_id for e in events)  # each exactly once
    assert committed_total(topology.bootstrap, f"{topology.name}-group", topology.source) == len(events)
    assert topology.metric("aoetl_transactions_total", outcome="committed") >= len(events) / 25
    assert topology.metric("aoetl_messages_produced_total", topic=topology.sink) == len(events)


def test_aborted_transaction_is_invisible_and_work_resumes_once(topology: Topology) -> None:
    events = produce_events(topology.bootstrap, topology.source, 30)
    returned: list[str] = []
    aborted: list[int] = []

    def crashing(value: Contract, context: MessageContext) -> Sequence[Output]:
        assert isinstance(value, RunEvent)
        committed = int(topology.metric("aoetl_messages_produced_total", topic=topology.sink))
        # "Die" late in the input, inside a transaction that already holds outputs...
        if int((value.task_id or "").removeprefix("task-")) >= 20 and len(returned) > committed:
            # ...once those outputs are really in the log, so the abort has something to hide.
            read(topology.bootstrap, topology.sink, len(returned), committed_only=False)
            aborted.append(len(returned) - committed)
            raise Crash
        returned.append(value.event_id)
        return [Output(topology.sink, context.key, value)]

    stop = topology.start(topology.loop(crashing, max_batch=100))
    wait_until(lambda: topology.errors, timeout=60, message="the simulated crash")
    topology.stop(stop)
    assert isinstance(topology.errors.pop(), Crash)
    assert topology.metric("aoetl_transactions_total", outcome="aborted") == 0  # a crash, not an abort call

    stop = topology.start(topology.loop(topology.copy(), instance="i2"))
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)

    assert not topology.errors
    assert ids(copied) == Counter(e.event_id for e in events)
    everything = read(topology.bootstrap, topology.sink, len(events), committed_only=False)
    assert aborted and aborted[0] > 0
    assert len(everything) == len(events) + aborted[0], (
        "aborted outputs are in the log, read_committed skips them"
    )


def test_poison_messages_go_to_dead_letters_and_the_loop_continues(topology: Topology) -> None:
    good = [event(n) for n in range(9)]
    rejected = event(100)
    unknown_writer = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + b"\x02xx"
    records = [(n % PARTITIONS, SERDE.encode(e)) for n, e in enumerate(good[:5])]
    records += [(1, b"\x00not avro at all"), (2, unknown_writer), (0, SERDE.encode(rejected))]
    records += [(n % PARTITIONS, SERDE.encode(e)) for n, e in enumerate(good[5:])]
    produce(topology.bootstrap, topology.source, records)

    def copy_or_reject(value: Contract, context: MessageContext) -> Sequence[Output]:
        assert isinstance(value, RunEvent)
        if value.event_id == rejected.event_id:
            raise DataError("this one breaks a rule")
        return [Output(topology.sink, context.key, value)]

    loop = topology.loop(copy_or_reject)
    stop = topology.start(loop)
    copied = read(topology.bootstrap, topology.sink, len(good))
    letters = [SERDE.decode(v, DeadLetter) for v in read(topology.bootstrap, topology.dead_letters, 3)]
    topology.stop(stop)

    assert not topology.errors
    assert ids(copied) == Counter(e.event_id for e in good)
    by_class = {letter.error.error_class: letter for letter in letters}
    assert set(by_class) == {"NotSingleObjectError", "UnknownFingerprintError", "DataError"}
    garbage = by_class["NotSingleObjectError"]
    assert (garbage.origin.topic, garbage.origin.partition, garbage.origin.offset) == (
        topology.source,
        1,
        2,
    )  # after good 1 and 4
    assert garbage.payload == b"\x00not avro at all"
    assert garbage.origin.key == b"1"
    assert garbage.stage == Stage.TRANSFORM
    assert garbage.origin.schema_fingerprint is None
    assert garbage.run_id is None and not garbage.error.transient
    assert by_class["UnknownFingerprintError"].origin.schema_fingerprint == "0123456789abcdef"
    assert (
        by_class["UnknownFingerprintError"].origin.partition,
        by_class["UnknownFingerprintError"].origin.offset,
    ) == (2, 1)
    data_error = by_class["DataError"]
    assert data_error.run_id == rejected.run_id
    assert data_error.error.message == "this one breaks a rule"
    assert SERDE.decode(data_error.payload, RunEvent) == rejected
    # Dead letters are counted by the monitor, from the topic; the loop counts what it produced there.
    assert topology.metric("aoetl_messages_produced_total", topic=topology.dead_letters) == 3


def test_transient_error_is_retried_then_succeeds_without_duplicates(topology: Topology) -> None:
    events = produce_events(topology.bootstrap, topology.source, 30)
    flaky = events[10].event_id
    attempts: list[int] = []

    def flaky_copy(value: Contract, context: MessageContext) -> Sequence[Output]:
        assert isinstance(value, RunEvent)
        if value.event_id == flaky:
            attempts.append(context.attempt)
            if context.attempt < 2:
                raise TransientError("database hiccup")
        return [Output(topology.sink, context.key, value)]

    loop = topology.loop(flaky_copy, retry=FAST_RETRY, max_batch=7)
    stop = topology.start(loop)
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)

    assert not topology.errors
    assert attempts == [0, 1, 2]
    assert ids(copied) == Counter(e.event_id for e in events)
    assert topology.metric("aoetl_retries_total") == 2


def test_a_failing_partition_does_not_stall_the_others(topology: Topology) -> None:
    events = produce_events(topology.bootstrap, topology.source, 30)
    stuck = events[3]  # partition 0; everything after it on partition 0 waits, the rest must not
    broken = threading.Event()
    broken.set()

    def copy_unless_broken(value: Contract, context: MessageContext) -> Sequence[Output]:
        assert isinstance(value, RunEvent)
        if value.event_id == stuck.event_id and broken.is_set():
            raise TransientError("sink down")
        return [Output(topology.sink, context.key, value)]

    loop = topology.loop(copy_unless_broken, retry=FAST_RETRY, max_batch=5)
    stop = topology.start(loop)
    flowing = [e for n, e in enumerate(events) if n % PARTITIONS != 0 or n < 3]
    copied = read(topology.bootstrap, topology.sink, len(flowing))
    assert ids(copied) == Counter(e.event_id for e in flowing)
    broken.clear()
    copied = read(topology.bootstrap, topology.sink, len(events))
    topology.stop(stop)

    assert not topology.errors
    assert ids(copied) == Counter(e.event_id for e in events)


def test_transient_error_past_the_attempt_cap_is_dead_lettered(topology: Topology) -> None:
    events = produce_events(topology.bootstrap, topology.source, 6)
    hopeless = events[4]

    def always_failing(value: Contract, context: MessageContext) -> Sequence[Output]:
        assert isinstance(value, RunEvent)
        if value.event_id == hopeless.event_id:
            raise TransientError("still down")
        return [Output(topology.sink, context.key, value)]

    retry = RetryPolicy(initial_delay=0.05, max_delay=0.1, max_attempts=3)
    loop = topology.loop(always_failing, retry=retry)
    stop = topology.start(loop)
    copied = read(topology.bootstrap, topology.sink, 5)
    (letter,) = [SERDE.decode(v, DeadLetter) for v in read(topology.bootstrap, topology.dead_letters, 1)]
    topology.stop(stop)

    assert ids(copied) == Counter(e.event_id for e in events if e is not hopeless)
    assert letter.error.transient and letter.attempt == 3
    assert letter.run_id == hopeless.run_id
    assert SERDE.decode(letter.payload, RunEvent) == hopeless


def test_non_transactional_mode_applies_effects_then_commits(topology: Topology) -> None:
    events = produce_events(topology.bootstrap, topology.source, 40)
    applied: list[str] = []
    flaky = events[7].event_id
    failed = threading.Event()

    def sink(value: Contract, context: MessageContext) -> Sequence[Output]:
        assert isinstance(value, RunEvent)
        if value.event_id == flaky and not failed.is_set():
            failed.set()
            raise TransientError("sink timeout")
        applied.append(value.event_id)
        return []

    loop = topology.loop(sink, transactional=False, retry=FAST_RETRY, max_batch=10)
    stop = topology.start(loop)
    group = f"{topology.name}-group"
    wait_until(
        lambda: committed_total(topology.bootstrap, group, topology.source) == len(events),
        timeout=60,
        message="all offsets committed",
    )
    topology.stop(stop)

    assert not topology.errors
    # The prefix before the failure was kept, so nothing was applied twice.
    assert Counter(applied) == Counter(e.event_id for e in events)
    assert topology.metric("aoetl_transactions_total", outcome="committed") == 0
