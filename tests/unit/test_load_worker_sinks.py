"""Regression (found by the fault soak): the load worker kept one open sink, so one PostgreSQL connection,
per destination it had ever written, until PostgreSQL refused new clients. It now keeps the most recently
used few and closes the rest."""

from __future__ import annotations

from typing import Any

import pytest

import services.load.worker as worker_module
from services.load.worker import MAX_OPEN_SINKS, LoadWorker
from shared.spec.models import PostgresDestination

pytestmark = pytest.mark.unit


class FakeSink:
    def __init__(self, destination: Any):
        self.destination = destination
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_sinks_beyond_the_limit_are_closed_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[FakeSink] = []

    def fake_open_sink(destination: Any, **kw: Any) -> FakeSink:
        opened.append(FakeSink(destination))
        return opened[-1]

    monkeypatch.setattr(worker_module, "open_sink", fake_open_sink)
    worker = LoadWorker(lambda name: name, "load-0", None)
    destinations = [PostgresDestination(type="postgres", table=f"t{i}") for i in range(MAX_OPEN_SINKS + 3)]
    first = worker.sink(destinations[0])
    for destination in destinations[1:MAX_OPEN_SINKS]:
        worker.sink(destination)
    assert worker.sink(destinations[0]) is first  # reused, and now the most recently used
    for destination in destinations[MAX_OPEN_SINKS:]:
        worker.sink(destination)

    assert len(opened) == len(destinations), "a cached sink was opened twice"
    still_open = [s for s in opened if not s.closed]
    assert len(still_open) == MAX_OPEN_SINKS
    assert not opened[0].closed
    assert [s.destination.table for s in opened if s.closed] == ["t1", "t2", "t3"]
    worker.close()
    assert all(s.closed for s in opened)
