"""What the fault tests of the topic readers share: a continuous pipeline and a windowed topic trigger (the
two readers of user topics, ``READERS``), each fed from a topic of its own by a paced stream of numbered
events and loading them into a PostgreSQL table of its own, with the exactly-once verdict.

The ledger is the events generated: event ``i`` has ``id`` i and ``amount`` i * 0.5, so count, distinct ids
and sums in the destination are compared with figures computed from ``total`` alone; which runs a trigger
must start is computed from where the broker put each event (its delivery reports), never from anything
the system wrote.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from services.extract.service import ExtractService
from services.extract.streams import stream_group
from services.orchestrator.service import OrchestratorService
from shared.contracts import PipelineRequest, RunStatus, Stage
from shared.kafka.topics import Topics
from shared.runtime import BaseService
from shared.spec import parse_spec
from shared.triggers import topic_run_id
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import assert_completed, await_result, stage
from tests.e2e.test_streaming import (
    EVENT_STEPS,
    EventProducer,
    PacedStream,
    assert_every_event_once,
    loaded_ids,
    new_topic,
    read_all,
    register,
    results_of,
)
from tests.faults.harness import RunWatcher
from tests.helpers import wait_until
from tests.support.hung_calls import STREAM_READER_PREFIX, TRIGGER_RUNNER_PREFIX


def numbered_event(i: int) -> tuple[dict[str, Any], str]:
    """Event ``i`` of a stream, and its key (53 keys, so every partition of a topic gets events)."""
    return {"id": i, "amount": i * 0.5}, f"k{i % 53}"


def _table(label: str) -> str:
    return f"{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"


@dataclass
class EventsIntoTable:
    """Numbered events streamed onto a topic, bound for one PostgreSQL table."""

    system: System
    dsn: str
    name: str  # the pipeline (or definition)
    table: str
    total: int
    stream: PacedStream

    def loaded(self) -> tuple[int, int]:
        return loaded_ids(self.dsn, self.table)

    def wait_loading(self, timeout: float = 60) -> None:
        wait_until(lambda: self.loaded()[0] > 0, timeout, message="rows loaded while events arrive")

    def wait_produced(self) -> None:
        self.stream.wait_sent()

    def wait_delivered(self, timeout: float, why: str = "") -> None:
        """Until every event was produced and has reached the destination; ``why`` ends the message of
        the failure."""
        raise NotImplementedError

    def assert_exactly_once(self) -> None:
        """The verdict, against the ledger of generated events."""
        raise NotImplementedError


# ---------------------------------------------------------------------------- continuous pipeline
@dataclass
class ContinuousRun(EventsIntoTable):
    """A continuous pipeline (a ``kafka`` source into PostgreSQL) and the stream of events feeding it."""

    run_id: str
    reader: Any  # the results topic, opened before the submit

    @property
    def group(self) -> str:
        """The consumer group the stream readers of this pipeline share."""
        return stream_group(self.name, self.system.suffix)

    def wait_delivered(self, timeout: float = 120, why: str = "") -> None:
        """Until every event was produced and at least ``total`` rows are in the table."""
        self.wait_produced()

        def all_loaded() -> bool:
            rows, distinct = self.loaded()
            assert rows >= self.total, f"{rows} rows ({distinct} distinct ids) loaded"
            return True

        wait_until(all_loaded, timeout, interval=0.5, message=f"{self.total} rows loaded{why}")

    def assert_exactly_once(self) -> None:
        """Stop the run (a continuous run ends CANCELLED); the table holds every event exactly once."""
        self.system.client.stop(self.run_id)
        final = await_result(self.reader, self.run_id)
        assert final.status is RunStatus.CANCELLED, final.errors
        assert_every_event_once(self.dsn, self.table, self.total, "amount")


@contextlib.contextmanager
def continuous_run(
    system: System,
    kafka_bootstrap: str,
    dsn: str,
    label: str,
    *,
    total: int,
    partitions: int,
    batch_rows: int = 200,
) -> Iterator[ContinuousRun]:
    """Submit a continuous pipeline reading a new topic of ``partitions`` partitions, and start streaming
    ``total`` numbered events into it."""
    topic = new_topic(kafka_bootstrap, partitions)
    table = _table(label)
    spec = parse_spec(
        {
            "name": f"{label}-{uuid.uuid4().hex[:6]}",
            "source": {"type": "kafka", "topic": topic, "format": "json"},
            "transforms": EVENT_STEPS,
            "destination": {"type": "postgres", "table": table},
            "run": {"batch_rows": batch_rows},
        }
    )
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        run = system.client.submit(spec)
        stream = PacedStream(EventProducer(kafka_bootstrap, topic), total, numbered_event).start()
        yield ContinuousRun(system, dsn, spec.name, table, total, stream, run.run_id, reader)


# --------------------------------------------------------------------------------- topic trigger
@dataclass
class WindowedTrigger(EventsIntoTable):
    """A registered definition whose topic trigger starts one run per ``window`` events of a topic of one
    partition; a run's source is its window (an ``event`` source), its destination one PostgreSQL table
    shared by all the runs."""

    topic: str
    window: int
    events: EventProducer
    watcher: RunWatcher  # opened before the first event

    def expected_runs(self) -> list[str]:
        """The run ids the windows must have: ``total`` events cut into windows of ``window`` in offset
        order, each run named after its first event's coordinates."""
        offsets = sorted(offset for partition, offset, _ in self.events.delivered if partition == 0)
        assert len(offsets) == len(self.events.delivered) == self.total, "events missing or misplaced"
        return [topic_run_id(self.name, self.topic, 0, o) for o in offsets[:: self.window]]

    def wait_delivered(self, timeout: float = 180, why: str = "") -> None:
        """Until every event was produced and every window's run has a result."""
        self.wait_produced()
        expected = set(self.expected_runs())

        def finished() -> bool:
            self.watcher.poll()
            done = expected & set(self.watcher.results)
            assert done == expected, f"{len(done)} of the {len(expected)} runs have a result"
            return True

        wait_until(finished, timeout, interval=0.25, message=f"a result for every window's run{why}")

    def assert_exactly_once(self) -> None:
        """One committed request and one completed result per window, each loading its ``window`` events;
        the table holds every event exactly once."""
        expected = Counter(self.expected_runs())
        requests = read_all(
            self.system, Topics.REQUESTS, PipelineRequest, lambda r: r.definition_name == self.name
        )
        assert Counter(r.run_id for r in requests) == expected, "not one request per window"
        results = results_of(self.system, self.name)
        assert Counter(r.run_id for r in results) == expected, "not one run per window"
        for result in results:
            assert_completed(result)
            assert stage(result, Stage.LOAD).rows_out == self.window, result.run_id
        assert_every_event_once(self.dsn, self.table, self.total, "amount")


@contextlib.contextmanager
def windowed_trigger(
    system: System,
    kafka_bootstrap: str,
    dsn: str,
    label: str,
    *,
    window: int,
    windows: int,
    per_tick: int = 100,
) -> Iterator[WindowedTrigger]:
    """Register the definition, then stream ``window * windows`` numbered events onto its trigger topic,
    ``per_tick`` every 0.1 s. Windows close on their event count only, so which events make a window does
    not depend on timing (and a window formed again after a rewind is the same window)."""
    topic = new_topic(kafka_bootstrap, 1)
    table = _table(label)
    name = register(
        system,
        {
            "name": f"{label}-{uuid.uuid4().hex[:6]}",
            "source": {"type": "event"},
            "transforms": EVENT_STEPS,
            "destination": {"type": "postgres", "table": table},
            "triggers": [
                {"type": "topic", "topic": topic, "window": {"events": window}, "start_from": "earliest"}
            ],
        },
    )
    total = window * windows
    with RunWatcher(system) as watcher:
        events = EventProducer(kafka_bootstrap, topic)
        stream = PacedStream(events, total, numbered_event, per_tick=per_tick).start()
        yield WindowedTrigger(system, dsn, name, table, total, stream, topic, window, events, watcher)


# ------------------------------------------------------------------------------------ the readers
@dataclass(frozen=True)
class TopicReader:
    """One kind of topic reader, as a fault test needs it: the service whose threads run it, the prefix of
    its transactional ids, the system around it, and a feed of events whose fate is checked."""

    id: str
    service: type[BaseService[Any]]
    transactional_prefix: str
    replicas: Mapping[str, int]
    feed: Callable[[System, str, str, str], AbstractContextManager[EventsIntoTable]]

    def replicas_besides_its_service(self) -> dict[str, int]:
        """The system as processes when the reader's service runs inside the test."""
        return {name: count for name, count in self.replicas.items() if name != self.service.name}


# Sized for a 2-core machine, and so that a fault landing a few seconds in still finds events arriving.
READERS = [
    TopicReader(
        "continuous-pipeline",
        ExtractService,
        STREAM_READER_PREFIX,
        {"orchestrator": 1, "extract": 2, "transform": 1, "load": 1},  # two readers share the stream
        lambda system, bootstrap, dsn, label: continuous_run(
            system, bootstrap, dsn, f"{label}-stream", total=10_000, partitions=3
        ),
    ),
    TopicReader(
        "topic-trigger",
        OrchestratorService,
        TRIGGER_RUNNER_PREFIX,
        {"orchestrator": 1, "extract": 1, "transform": 1, "load": 1},
        # 360 events at ~20/s: windows keep closing, and their runs loading, for 18 s
        lambda system, bootstrap, dsn, label: windowed_trigger(
            system, bootstrap, dsn, f"{label}-trigger", window=30, windows=12, per_tick=2
        ),
    ),
]
