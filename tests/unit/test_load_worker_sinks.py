"""Regression (found by the fault soak): the load worker kept one open sink, so one PostgreSQL connection,
per destination it had ever written, until PostgreSQL refused new clients. It now keeps the most recently
used few and closes the rest. And the bytes a sink wrote travel in the BATCH_LOADED event (issue 12)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import services.load.worker as worker_module
from services.load.sinks import WriteResult
from services.load.worker import MAX_OPEN_SINKS, LoadWorker
from shared.batch import encode_table
from shared.contracts import BatchLoaded, DataBatch, RunEvent, Stage
from shared.progress import fold
from shared.spec.models import PipelineSpec, PostgresDestination

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


def test_a_loaded_batch_says_the_bytes_its_file_part_holds_and_a_redelivery_the_same(tmp_path: Any) -> None:
    """Issue 12: the BATCH_LOADED event carries the sink's bytes (RunEvent v11), which the result sums."""
    spec = PipelineSpec.model_validate(
        {
            "name": "orders",
            "source": {"type": "csv", "path": str(tmp_path / "in.csv")},
            "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
        }
    )
    table = pa.table({"id": [1, 2, 3]})
    batch = DataBatch(
        run_id="r1", task_id="r1:t0", batch_id="r1:t0:0", seq=0, stage=Stage.TRANSFORM,
        row_count=3, payload=encode_table(table), spec=spec,
    )  # fmt: skip
    worker = LoadWorker(lambda name: name, "load-0", None)
    (first,) = worker.load(batch)
    (again,) = LoadWorker(lambda name: name, "load-1", None).load(batch)  # another replica, redelivered
    (part,) = (tmp_path / "out" / "r1").iterdir()
    assert part.read_bytes() == b'{"id":1}\n{"id":2}\n{"id":3}\n'
    for output, applied in ((first, True), (again, False)):
        assert isinstance(output.value, RunEvent)
        assert output.value.payload == BatchLoaded(applied=applied, bytes=part.stat().st_size)
    assert fold("r1", [first.value, again.value]).stage(Stage.LOAD).total.bytes == part.stat().st_size
    worker.close()


def test_a_sink_that_does_not_know_its_bytes_says_none(monkeypatch: pytest.MonkeyPatch) -> None:
    class CountingSink(FakeSink):
        def write(self, run_id: str, batch_id: str, table: pa.Table, **kw: Any) -> WriteResult:
            return WriteResult(applied=True, rows_written=table.num_rows, rows_deduplicated=0)

    monkeypatch.setattr(worker_module, "open_sink", lambda destination, **kw: CountingSink(destination))
    spec = PipelineSpec.model_validate(
        {"name": "o", "source": {"type": "csv", "path": "in.csv"},
         "destination": {"type": "postgres", "table": "public.o"}}
    )  # fmt: skip
    batch = DataBatch(
        run_id="r1", task_id="r1:t0", batch_id="r1:t0:0", seq=0, stage=Stage.TRANSFORM,
        row_count=1, payload=encode_table(pa.table({"id": [1]})), spec=spec,
    )  # fmt: skip
    (output,) = LoadWorker(lambda name: name, "load-0", None).load(batch)
    assert isinstance(output.value, RunEvent)
    assert output.value.payload == BatchLoaded(applied=True, bytes=None)


@pytest.mark.parametrize("deduped", [True, False])
def test_a_sql_sink_ends_a_run_in_a_transaction_only_if_it_deduped(tmp_path: Any, deduped: bool) -> None:
    """The spec decides: a run that dedupes has its key hashes deleted at its end; one that does not has
    nothing to end in append mode, and its finalize opens no database transaction."""
    import duckdb

    from shared.contracts import ControlAction, RunControl

    transforms = [{"op": "dedupe", "keys": ["id"]}] if deduped else []
    spec = PipelineSpec.model_validate(
        {"name": "o", "source": {"type": "csv", "path": "in.csv"}, "transforms": transforms,
         "destination": {"type": "duckdb", "path": str(tmp_path / "w.duckdb"), "table": "o"}}
    )  # fmt: skip
    batch = DataBatch(
        run_id="r1", task_id="r1:t0", batch_id="r1:t0:0", seq=0, stage=Stage.TRANSFORM,
        row_count=2, payload=encode_table(pa.table({"id": [1, 2]})), spec=spec,
    )  # fmt: skip
    worker = LoadWorker(lambda name: name, "load-0", None)
    list(worker.load(batch))
    sink = worker.sink(spec.destination)
    opened: list[str] = []
    real = sink._transaction  # type: ignore[attr-defined]
    sink._transaction = lambda action: opened.append(action) or real(action)  # type: ignore[attr-defined]
    list(worker.control(RunControl(run_id="r1", action=ControlAction.FINALIZE, spec=spec)))
    worker.close()
    assert opened == (["finalizing"] if deduped else [])
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        assert con.execute("SELECT count(*) FROM aoetl.dedupe").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM o").fetchone() == (2,)
