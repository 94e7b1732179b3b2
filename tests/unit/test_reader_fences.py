"""A topic reader's worker (``shared.streaming.reader.RestartingWorker``) on a terminal fence: it restarts
with a fresh fence count and goes on exactly once, rather than dying or stalling the pipeline or the
trigger it reads for; restarts after fences with nothing committed between them back off. Fake clients
behind the Kafka Protocols; ``tests/integration/test_reader_fences.py`` fences a reader with a real
second producer of its transactional id."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

import shared.kafka.transaction as transaction_module
import shared.streaming.reader as reader_module
from shared.kafka.transaction import ProducerFencedError
from shared.settings import KafkaSettings
from shared.streaming import RestartingWorker
from tests.helpers import wait_until
from tests.unit.kafka_fakes import FakeConsumer, FakeProducer, kafka_failure
from tests.unit.test_transaction_engine import CountingReader, Record

pytestmark = pytest.mark.unit


def fence() -> BaseException:
    return kafka_failure(KafkaError._FENCED, fatal=True)


class ReplayingConsumer(FakeConsumer):
    """Hands out its ``log`` again from wherever it is sought to, and all of it to every new subscription
    (nothing is ever committed here, so that is where a new member of the group starts)."""

    def __init__(self, log: list[Record]) -> None:
        super().__init__()
        self.log = log
        self.subscriptions = 0

    def subscribe(self, topics: list[str], on_assign: Any = None, **kw: Any) -> None:
        super().subscribe(topics, on_assign, **kw)
        self.subscriptions += 1
        self.messages = list(self.log)

    def seek(self, tp: TopicPartition) -> None:
        super().seek(tp)
        kept = [m for m in self.messages if m.partition() != tp.partition]
        again = [m for m in self.log if m.partition() == tp.partition and m.offset() >= tp.offset]
        self.messages = kept + again


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        reader_module,
        "TransactionalReader",
        functools.partial(reader_module.TransactionalReader, retry_delay=lambda _: 0.0),
    )


def producers_failing(
    monkeypatch: pytest.MonkeyPatch, commits: list[list[BaseException | None]]
) -> list[FakeProducer]:
    """Producers whose commits fail as ``commits`` says, one list per producer in the order they are
    made; later ones succeed."""
    made: list[FakeProducer] = []

    def factory(settings: KafkaSettings, **overrides: Any) -> FakeProducer:
        made.append(FakeProducer())
        if commits:
            made[-1].failures["commit"] = commits.pop(0)
        return made[-1]

    monkeypatch.setattr(transaction_module, "make_producer", factory)
    return made


@pytest.fixture
def running() -> Iterator[list[CountingReader]]:
    workers: list[CountingReader] = []
    yield workers
    for worker in workers:
        worker.stop()
        worker.join(10)


def test_a_terminal_fence_restarts_the_worker_with_a_fresh_fence_count(
    monkeypatch: pytest.MonkeyPatch, fast: None, running: list[CountingReader]
) -> None:
    # Three fences in a row are terminal; the producer of the restarted worker is fenced once more, which
    # would be a fourth within the window if the count were not fresh, and the fifth producer commits.
    made = producers_failing(monkeypatch, [[fence()], [fence()], [fence()], [fence()]])
    consumer = ReplayingConsumer([Record(0, 0, b'{"a": 1}'), Record(0, 1, b'{"a": 2}')])
    monkeypatch.setattr(reader_module, "make_consumer", lambda *a, **kw: consumer)
    worker = CountingReader()
    worker.restart_delay_s = 0.0
    running.append(worker)
    worker.start()
    wait_until(lambda: len(made) == 5 and "commit" in made[4].calls, timeout=10, message="the fifth commit")
    assert worker.is_alive(), "a terminal fence killed the worker"
    assert worker.restarts == 1 and consumer.subscriptions == 2, "one restart, with a fresh fence count"
    assert [v for t, _, v in made[4].produced if t == "out"] == [b"0:0-1"], "the window, once"


class AlwaysFenced(RestartingWorker):
    """``_serve`` raises a terminal fence each time; a commit between two of them at ``progress_after``."""

    def __init__(self, serves: int, progress_after: int) -> None:
        super().__init__("always-fenced")
        self.serves, self.progress_after = serves, progress_after
        self.delays: list[float] = []
        self._stop = self  # type: ignore[assignment]  # records the restart delays instead of waiting
        self.resets = 0

    def is_set(self) -> bool:
        return self.serves == 0

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        return False

    def _reset(self) -> None:
        self.resets += 1

    def _serve(self) -> None:
        self.serves -= 1
        if self.serves == self.progress_after:
            self._progressed()
        raise ProducerFencedError("fenced again and again")


def test_restarts_after_fences_back_off_until_something_is_committed() -> None:
    worker = AlwaysFenced(serves=8, progress_after=3)
    worker._run()
    # A twin with our id fences us at every restart: doubling delays, capped; a commit starts them over.
    assert worker.delays == [1.0, 2.0, 4.0, 8.0, 1.0, 2.0, 4.0, 8.0]
    assert worker.restarts == 8 and worker.resets == 8
    capped = AlwaysFenced(serves=8, progress_after=-1)
    capped._run()
    assert max(capped.delays) == RestartingWorker.fenced_restart_max_s


def test_a_failure_other_than_a_fence_restarts_without_backoff(
    monkeypatch: pytest.MonkeyPatch, fast: None, running: list[CountingReader]
) -> None:
    made = producers_failing(monkeypatch, [])
    consumer = ReplayingConsumer([Record(0, 0, b'{"a": 1}'), Record(0, 1, b'{"a": 2}')])
    opened = threading.Event()

    def first_open_fails(*a: Any, **kw: Any) -> ReplayingConsumer:
        if not opened.is_set():
            opened.set()
            raise RuntimeError("broker unreachable")
        return consumer

    monkeypatch.setattr(reader_module, "make_consumer", first_open_fails)
    worker = CountingReader()
    worker.restart_delay_s = 0.0
    running.append(worker)
    worker.start()
    wait_until(lambda: any("commit" in p.calls for p in made), timeout=10, message="a commit")
    assert worker.is_alive() and worker.restarts == 1
