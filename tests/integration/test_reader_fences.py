"""A topic reader fenced by a real second producer of its transactional id, on the real broker (issue 14):
fences until the third within the window are taken back and redone by a new producer; the third is
terminal for that reader, and its worker restarts with a fresh fence count and reads on. Every record is
copied exactly once (read_committed) and the worker never dies. The same pattern as the task loop's
fence test in ``test_processing_aborts``."""

from __future__ import annotations

import functools
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from shared.avro import AvroSerde
from shared.kafka.clients import make_producer
from shared.settings import KafkaSettings
from shared.spec.models import StreamFormat
from shared.streaming import (
    Encoded,
    ReaderConfig,
    TransactionalReader,
    Window,
    WindowedTopicReader,
    WindowLimits,
)
from tests.helpers import wait_until
from tests.integration.test_runtime import PARTITIONS, Topology, produce, read, samples, topology

pytestmark = pytest.mark.integration

__all__ = ["topology"]  # the fixture, re-used


class CopyReader(WindowedTopicReader[dict[str, Any]]):
    """Copies each JSON event to ``sink``; a window is at most 5 events or 0.2 s."""

    def __init__(self, topology: Topology) -> None:
        self.sink = topology.sink
        config = ReaderConfig(
            kafka=KafkaSettings(bootstrap_servers=topology.bootstrap),
            group_id=f"{topology.name}-group",
            transactional_id=f"{topology.name}-reader",
            topic=topology.source,
            dead_letter_topic=topology.dead_letters,
            timeout=10.0,
        )
        limits = WindowLimits(items=5, max_age_s=0.2)
        super().__init__(f"copy-{topology.name}", config, limits, StreamFormat.JSON, AvroSerde())
        self.restart_delay_s = 0.2

    def keep(self, event: dict[str, Any]) -> dict[str, Any]:
        return event

    def outputs(self, closed: list[Window[dict[str, Any]]], reader: TransactionalReader) -> list[Encoded]:
        return [(self.sink, None, json.dumps(item).encode()) for w in closed for item in w.items]


@pytest.fixture
def copying(topology: Topology) -> Iterator[CopyReader]:
    worker = CopyReader(topology)
    worker.start()
    yield worker
    worker.stop()
    worker.join(60)
    assert not worker.is_alive(), "the reader did not stop"


def fences() -> float:
    return sum(v for (name, _), v in samples().items() if name == "aoetl_producer_fences_total")


def fenced_since(before: float) -> bool:
    return fences() > before


def test_a_reader_fenced_again_and_again_restarts_and_copies_exactly_once(
    topology: Topology, copying: CopyReader
) -> None:
    sent: list[str] = []

    def send(count: int) -> None:
        batch = [uuid.uuid4().hex for _ in range(count)]
        produce(
            topology.bootstrap,
            topology.source,
            [(n % PARTITIONS, json.dumps({"id": i}).encode()) for n, i in enumerate(batch)],
        )
        sent.extend(batch)

    send(20)
    read(topology.bootstrap, topology.sink, len(sent))
    settings = KafkaSettings(bootstrap_servers=topology.bootstrap)
    for n in range(1, 4):  # the third fence within the window is terminal for the reader
        before = fences()
        # A newer epoch (a producer initialises once): the reader's producer is fenced at its next commit.
        twin = make_producer(settings, transactional_id=copying.reader_config.transactional_id)
        twin.init_transactions(30)
        send(10)  # something to commit
        wait_until(functools.partial(fenced_since, before), timeout=60, message=f"fence {n}")
        # Copied after all: the reader's new producer (its new epoch) is there before the next twin.
        read(topology.bootstrap, topology.sink, len(sent))
        assert copying.restarts == (1 if n == 3 else 0), "only the third fence restarts the worker"
    send(20)
    copied = read(topology.bootstrap, topology.sink, len(sent))
    assert copying.is_alive(), "a terminal fence killed the reader"
    assert copying.restarts == 1, "restarted once: the fence count started afresh"
    assert Counter(json.loads(v)["id"] for v in copied) == Counter(sent), "exactly once"
