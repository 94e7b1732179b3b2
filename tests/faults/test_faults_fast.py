"""Fault injection, fast subset (part of ``make test``): services killed mid-run and poison messages.

Each test keeps its own ledger of what was sent (the source rows it generated, computed outside the
system) and checks the destination against it: nothing lost, nothing duplicated, the result right.
"""

from __future__ import annotations

import os
import signal
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.avro import SchemaCatalog
from shared.contracts import (
    Alert,
    AlertKind,
    DeadLetter,
    EventKind,
    PipelineRequest,
    RunEvent,
    Severity,
    Stage,
)
from shared.kafka.clients import produce_sync
from shared.kafka.topics import Topics
from shared.spec import parse_spec
from shared.spec.models import PipelineSpec
from tests.e2e.conftest import System, group_env
from tests.e2e.test_pipelines import (
    ORDER_STEPS,
    assert_completed,
    await_result,
    expected_orders,
    stage,
    write_orders,
)
from tests.faults.harness import pg_figures, running_system
from tests.helpers import wait_until

pytestmark = pytest.mark.faults

REPLICAS = {"orchestrator": 1, "extract": 2, "transform": 2, "load": 2}


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[System]:
    """One system for the module: each test that kills a replica brings its service back to full strength
    (``_full_strength``) before the next starts, so a test finds the replicas ``REPLICAS`` names."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AOETL_POSTGRES_DSN", postgres_dsn)
        with running_system(kafka_bootstrap, postgres_dsn, REPLICAS) as sys_:
            yield sys_


def _full_strength(system: System, kafka_bootstrap: str) -> None:
    """Start a replacement for every replica that died, and wait until it is ready."""
    started = []
    for name, count in REPLICAS.items():
        missing = count - len(system.supervisor.alive(name))
        if missing > 0:
            env = group_env(kafka_bootstrap, name, system.suffix)
            started += system.supervisor.start(name, missing, env=env)
    system.supervisor.wait_ready(started, timeout=60)


def orders_spec(name: str, folder: Path, table: str, run: dict[str, int] | None = None) -> PipelineSpec:
    """The orders CSVs in ``folder`` -> ORDER_STEPS -> the PostgreSQL ``table``."""
    return parse_spec(
        {
            "name": name,
            "source": {"type": "csv", "path": str(folder / "*.csv")},
            "transforms": ORDER_STEPS,
            "destination": {"type": "postgres", "table": table},
            **({"run": run} if run else {}),
        }
    )


# extract in `make chaos` only: tests/faults/test_faults_stream.py kills an extract replica in `make test`
@pytest.mark.parametrize(
    "victim", [pytest.param("extract", marks=pytest.mark.slow), "transform", "load", "orchestrator"]
)
def test_sigkill_mid_run_loses_and_duplicates_nothing(
    system: System, tmp_path: Path, postgres_dsn: str, kafka_bootstrap: str, victim: str
):
    rows = write_orders(tmp_path / "in", 150_000, files=3, seed=21)
    table = f"kill_{victim}_{uuid.uuid4().hex[:6]}"
    spec = orders_spec(f"kill-{victim}", tmp_path / "in", table, {"batch_rows": 2_500, "parallelism": 12})
    trigger = {
        "extract": Stage.EXTRACT,
        "transform": Stage.TRANSFORM,
        "load": Stage.LOAD,
        "orchestrator": Stage.LOAD,
    }
    with system.client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False) as reader:
        request = PipelineRequest(spec=spec, requested_by="faults")
        system.client.publish(Topics.REQUESTS, request.run_id, request)

        def stage_started() -> bool:
            return any(
                isinstance(v, RunEvent) and v.run_id == request.run_id and v.stage is trigger[victim]
                for _, v in reader.poll({Topics.EVENTS: RunEvent})
            )

        wait_until(stage_started, timeout=60, message=f"{victim} at work")
        target = system.supervisor.alive(victim)[0]
        os.kill(target.pid, signal.SIGKILL)
        wait_until(lambda: not target.is_alive(), timeout=10, message="the victim to die")
        if victim == "orchestrator":  # the only replica: a new one must rebuild the run from Kafka
            _full_strength(system, kafka_bootstrap)
        result = await_result(reader, request.run_id)
    _full_strength(system, kafka_bootstrap)
    assert_completed(result)
    want = expected_orders(rows)
    got, distinct_ids = pg_figures(postgres_dsn, table)
    assert got == want
    assert distinct_ids == want["count"], "a row was loaded twice"
    assert stage(result, Stage.LOAD).rows_out == want["count"]


CHAINED = {"orchestrator": 1, "extract": 2, "load": 1}  # no transform service at all


def test_sigkill_of_a_chaining_extract_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, postgres_dsn: str, kafka_bootstrap: str
):
    """The services' default topology: extract runs the transform stage on what it reads and hands load
    the transformed batches, in the read's transaction (services.extract.handoff). A system without a
    transform service completes the run exactly once although an extract replica dies mid-split."""
    rows = write_orders(tmp_path / "in", 60_000, files=3, seed=23)
    table = f"kill_chained_{uuid.uuid4().hex[:6]}"
    spec = orders_spec("kill-chained", tmp_path / "in", table, {"batch_rows": 1_000, "parallelism": 6})
    chained = {"AOETL_CHAIN_TRANSFORM": "true"}
    with (
        pytest.MonkeyPatch.context() as patch,
        running_system(kafka_bootstrap, postgres_dsn, CHAINED, chained) as system,
    ):
        patch.setenv("AOETL_POSTGRES_DSN", postgres_dsn)
        with system.client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False) as reader:
            request = PipelineRequest(spec=spec, requested_by="faults")
            system.client.publish(Topics.REQUESTS, request.run_id, request)

            def transformed_by_extract() -> bool:
                return any(
                    isinstance(v, RunEvent)
                    and v.run_id == request.run_id
                    and v.kind is EventKind.BATCH_TRANSFORMED
                    and (v.instance or "").startswith("extract")
                    for _, v in reader.poll({Topics.EVENTS: RunEvent})
                )

            wait_until(transformed_by_extract, timeout=60, message="extract transforming")
            target = system.supervisor.alive("extract")[0]
            os.kill(target.pid, signal.SIGKILL)
            wait_until(lambda: not target.is_alive(), timeout=10, message="the victim to die")
            result = await_result(reader, request.run_id)
    assert_completed(result)
    want = expected_orders(rows)
    got, distinct_ids = pg_figures(postgres_dsn, table)
    assert got == want
    assert distinct_ids == want["count"], "a row was loaded twice"
    assert stage(result, Stage.TRANSFORM).rows_out == want["count"]
    assert stage(result, Stage.LOAD).rows_out == want["count"]


def _poison(system: System) -> list[tuple[str, bytes]]:
    catalog = SchemaCatalog.default()
    fp = catalog.fingerprint(PipelineRequest.avro_name)
    alert = system.client.serde.encode(Alert(kind=AlertKind.RUN_STUCK, severity=Severity.INFO, message="x"))
    request = system.client.serde.encode(PipelineRequest(spec=None, definition_name="nope"))
    return [
        ("garbage", os.urandom(64)),
        ("empty", b""),
        ("truncated", request[: len(request) // 2]),
        ("trailing-bytes", request + b"\x00\x01\x02"),
        (
            "unknown-fingerprint",
            b"\xc3\x01" + struct.pack("<Q", int.from_bytes(fp, "little") ^ 0xFFFF) + request[10:],
        ),
        ("wrong-writer-schema", alert),
    ]


def test_poison_messages_go_to_dead_letters_with_their_origin_and_nothing_stalls(
    system: System, tmp_path: Path, postgres_dsn: str
):
    inputs = [Topics.TASKS, Topics.DATA_EXTRACTED, Topics.DATA_TRANSFORMED, Topics.CONTROL, Topics.EVENTS]
    # the module's system: replicas an earlier test killed (and replaced) are not this test's to count
    replicas = [p for p in system.supervisor.processes() if p.is_alive()]
    sent: dict[tuple[str, str], None] = {}
    with system.client.reader(Topics.DEAD_LETTERS, from_beginning=False) as dlq:
        for logical in inputs:
            for kind, raw in _poison(system):
                key = f"poison-{kind}-{uuid.uuid4().hex[:6]}"
                produce_sync(system.client._producer, system.client.topic(logical), raw, key=key)
                sent[(system.client.topic(logical), key)] = None
        letters: dict[tuple[str, str], DeadLetter] = {}

        def all_dead_lettered() -> bool:
            for _, v in dlq.poll({Topics.DEAD_LETTERS: DeadLetter}):
                if isinstance(v, DeadLetter) and v.origin.key is not None:
                    letters[(v.origin.topic, v.origin.key.decode())] = v
            return set(sent) <= set(letters)

        wait_until(all_dead_lettered, timeout=60, message="every poison message in the dead-letter topic")
    for (topic, _), letter in ((k, letters[k]) for k in sent):
        assert letter.origin.topic == topic and letter.origin.offset >= 0
        assert letter.error.error_class and not letter.error.transient
    # ...and the system still runs pipelines correctly afterwards
    rows = write_orders(tmp_path / "in", 5_000, files=1, seed=2)
    table = f"after_poison_{uuid.uuid4().hex[:6]}"
    spec = orders_spec("after-poison", tmp_path / "in", table)
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        request = PipelineRequest(spec=spec)
        system.client.publish(Topics.REQUESTS, request.run_id, request)
        assert_completed(await_result(reader, request.run_id))
    assert pg_figures(postgres_dsn, table)[0] == expected_orders(rows)
    assert all(p.is_alive() for p in replicas)  # no poison killed a replica
