"""What the fault tests and the soak share: a system under test on private topics (its services as
processes, or one of them inside the test process for faults injected there), runs with a ledger kept
outside the system (the rows generated, and what they must become), the exactly-once verdict, and the
faults on the services themselves (signals, replicas added). What is read of Kafka to judge a fault is in
``tests.faults.kafka_views``, the private servers and their faults in ``tests.faults.servers``, the
three-broker cluster's in ``tests.faults.cluster``.

The ledger is computed with the standard library from the generated rows (``expected_orders``), never from
anything the system wrote, so a bug that loses or duplicates rows cannot also hide itself.

To debug a failed fault test, set ``AOETL_FAULTS_KEEP_LOGS`` to a folder (the services' and private
servers' logs are kept there) and ``PYTHONFAULTHANDLER=1`` (the services' logs end with their threads'
stacks, taken when the test failed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aoetl.devstack import ServiceProcess
from shared.contracts import (
    EventKind,
    PipelineRequest,
    PipelineResult,
    RunEvent,
    RunStatus,
    Stage,
)
from shared.kafka.topics import Topics
from shared.runtime import BaseService
from shared.settings import load_settings
from shared.signals import GracefulShutdown
from shared.spec import parse_spec
from shared.startup import publish_writer_schemas
from tests.e2e.conftest import System
from tests.e2e.conftest import running_system as system_of_its_own
from tests.e2e.test_pipelines import ORDER_STEPS, expected_orders, write_orders
from tests.helpers import wait_until

KEEP_LOGS_ENV = "AOETL_FAULTS_KEEP_LOGS"
# After a broker restart every transactional stage can meet librdkafka's hung send_offsets (#5456, #5511)
# once, and each gives it up after its Kafka timeout plus a grace: 10 s rather than the default 30 s keeps
# a chain of stages recovering one after another within a test's bounds. Services started by the test
# (processes or threads) inherit the test's environment, so ``monkeypatch.setenv(*SHORT_KAFKA_CALLS)``.
SHORT_KAFKA_CALLS = ("AOETL_KAFKA_TIMEOUT_S", "10")
# Modest on purpose: the machines these run on have 2 cores, shared with other work.
REPLICAS = {"orchestrator": 1, "extract": 2, "transform": 2, "load": 2}
RESULT_TIMEOUT = 180.0


# ------------------------------------------------------------------------------------ the system
@contextlib.contextmanager
def running_system(
    kafka_bootstrap: str,
    postgres_dsn: str,
    replicas: Mapping[str, int] = REPLICAS,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[System]:
    """Every service as processes on topics of their own (``tests.e2e.conftest.running_system``, with
    ``extra_env`` over its settings); stopped, and its topics deleted, afterwards. With
    ``AOETL_FAULTS_KEEP_LOGS`` a failed test keeps its logs."""
    suffix: str | None = None
    try:
        env = dict(extra_env) if extra_env else None
        with system_of_its_own(kafka_bootstrap, postgres_dsn, dict(replicas), env) as system:
            suffix = system.suffix
            try:
                yield system
            except BaseException:
                if os.environ.get(KEEP_LOGS_ENV):
                    dump_stacks(system)
                    keep_logs(system.state_dir / "logs", "services")
                raise
    finally:
        if suffix is not None:
            delete_topics_of(kafka_bootstrap, suffix)


def keep_logs(folder: Path, what: str) -> None:
    """With ``AOETL_FAULTS_KEEP_LOGS`` set to a folder, copy ``folder`` (logs deleted with what failed)
    there, to debug a failed fault test; without it, nothing is kept. With ``PYTHONFAULTHANDLER=1`` too,
    the services' logs end with their threads' stacks (``dump_stacks``)."""
    target_root = os.environ.get(KEEP_LOGS_ENV)
    if not target_root or not folder.is_dir():
        return
    target = Path(target_root) / f"{what}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("data"))
    print(f"{what} logs kept in {target}")


def dump_stacks(system: System) -> None:
    """With ``PYTHONFAULTHANDLER`` set (the services inherit it), SIGABRT makes each live service write
    the stack of every thread into its log as it dies: where a stuck service is stuck."""
    if not os.environ.get("PYTHONFAULTHANDLER"):
        return
    for process in system.supervisor.alive():
        with contextlib.suppress(ProcessLookupError):
            signal_replica(process, signal.SIGABRT, wait_exit=10)


def delete_topics_of(kafka_bootstrap: str, suffix: str) -> None:
    """The system's suffixed topics and the monitor's faust topics (named after its app id, which holds
    the suffix): a shared broker should not collect them test after test."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if suffix in t]
        if names:
            for future in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    future.result()
    except KafkaException:
        pass  # a broker that is gone took its topics with it


def group_id(system: System, service: str) -> str:
    """The consumer group ``start_system`` gives a service."""
    return f"aoetl-{service}{system.suffix}"


def start_replicas(
    system: System, service: str, count: int = 1, *, env: Mapping[str, str] | None = None, wait: bool = True
) -> list[ServiceProcess]:
    """More replicas of ``service`` in the system's group (a replacement after a kill, or a scale-out)."""
    started = system.supervisor.start(
        service, count, env={"AOETL_GROUP_ID": group_id(system, service), **(env or {})}
    )
    if wait:
        system.supervisor.wait_ready(started, timeout=90)
    return started


@contextlib.contextmanager
def service_in_process(
    system: System,
    service_class: type[BaseService[Any]],
    *,
    before_stop: Callable[[], None] | None = None,
) -> Iterator[BaseService[Any]]:
    """One replica of ``service_class`` as a thread of the test process, in the system's group and on its
    topics, with the settings a process of it would get (the test's environment and the system's): for
    faults injected by monkeypatching. Ready
    (connected, partitions assigned) on entry; on exit ``before_stop`` runs (a hung call released, so the
    service can stop), then the service stops gracefully. Other replicas may run as processes."""
    name = service_class.name
    environment = {
        **system.env,
        "AOETL_GROUP_ID": group_id(system, name),
        "AOETL_INSTANCE_ID": f"{name}-in-test",
    }
    with mock.patch.dict(os.environ, environment):
        settings = load_settings(service_class.settings_class)
    service = service_class(settings)
    shutdown = GracefulShutdown()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            # what run_service does around the service, but the HTTP server, the signals and the logging
            if publish_writer_schemas(service.settings, service.serde, shutdown):
                service.run(shutdown)
        except BaseException as exc:
            failures.append(exc)
            raise

    thread = threading.Thread(target=serve, name=f"{name}-in-test", daemon=True)
    thread.start()
    try:
        checks = service.readiness_checks().values()
        wait_until(
            lambda: failures or all(check() for check in checks), 90, message=f"the in-process {name} ready"
        )
        assert not failures, f"the in-process {name} failed at start: {failures[0]!r}"
        yield service
    finally:
        if before_stop is not None:
            before_stop()
        shutdown.request("the test is over")
        thread.join(90)
    assert not thread.is_alive(), f"the in-process {name} did not stop"
    assert not failures, f"the in-process {name} failed: {failures[0]!r}"


def signal_replica(process: ServiceProcess, sig: signal.Signals, *, wait_exit: float | None = 30.0) -> None:
    """Send ``sig``; for a terminating one, wait up to ``wait_exit`` seconds until the process is gone."""
    os.kill(process.pid, sig)
    if wait_exit is not None:
        wait_until(lambda: not process.is_alive(), timeout=wait_exit, message=f"{process.name} to exit")


# -------------------------------------------------------------------------------- runs and ledger
@dataclass
class OrdersRun:
    """One pipeline run and its ledger: the rows sent, and which of them must arrive."""

    label: str
    table: str
    rows: list[dict[str, str]]
    spec: dict[str, Any]
    run_id: str = ""
    must_arrive: list[dict[str, str]] = field(default_factory=list)

    @property
    def expected(self) -> dict[str, object]:
        return expected_orders(self.must_arrive)


def orders_run(
    directory: Path,
    label: str,
    rows: int,
    *,
    seed: int,
    files: int = 2,
    batch_rows: int = 1_000,
    parallelism: int = 4,
    quality: list[dict[str, Any]] | None = None,
) -> OrdersRun:
    """Write the source CSVs and describe the run: orders into a PostgreSQL table of its own."""
    written = write_orders(directory, rows, files=files, seed=seed)
    table = f"{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    spec = {
        "name": label,
        "source": {"type": "csv", "path": str(directory / "*.csv")},
        "transforms": ORDER_STEPS,
        "quality": quality or [],
        "destination": {"type": "postgres", "table": table},
        "run": {"batch_rows": batch_rows, "parallelism": parallelism},
    }
    return OrdersRun(label, table, written, spec, must_arrive=list(written))


class RunWatcher:
    """Submits runs and follows their events and results (opened before the first submit, so it sees
    everything a run produces)."""

    def __init__(self, system: System):
        self.system = system
        self.reader = system.client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False)
        self.events: dict[str, list[RunEvent]] = {}
        self.results: dict[str, list[PipelineResult]] = {}

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> RunWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, run: OrdersRun) -> str:
        request = PipelineRequest(spec=parse_spec(run.spec), requested_by="faults")
        run.run_id = request.run_id
        self.system.client.publish(Topics.REQUESTS, request.run_id, request)
        return request.run_id

    def poll(self) -> None:
        for _, value in self.reader.poll({Topics.EVENTS: RunEvent, Topics.RESULTS: PipelineResult}, 0.2):
            if isinstance(value, RunEvent):
                self.events.setdefault(value.run_id, []).append(value)
            elif isinstance(value, PipelineResult):
                self.results.setdefault(value.run_id, []).append(value)

    def saw(self, run_id: str, stage: Stage, kind: EventKind | None = None) -> bool:
        return any(e.stage is stage and (kind is None or e.kind is kind) for e in self.events.get(run_id, []))

    def wait_stage(
        self, run_id: str, stage: Stage, kind: EventKind | None = None, timeout: float = 90
    ) -> None:
        def seen() -> bool:
            self.poll()
            return self.saw(run_id, stage, kind)

        wait_until(seen, timeout=timeout, message=f"{stage.value} at work on run {run_id}")

    def result(self, run_id: str) -> PipelineResult | None:
        found = self.results.get(run_id)
        return found[0] if found else None

    def await_result(self, run_id: str, timeout: float = RESULT_TIMEOUT) -> PipelineResult:
        def arrived() -> PipelineResult | None:
            self.poll()
            return self.result(run_id)

        result = wait_until(arrived, timeout=timeout, message=f"a result for run {run_id}")
        assert result is not None
        return result


# --------------------------------------------------------------------------------------- verdict
def pg_figures(dsn: str, table: str) -> tuple[dict[str, object], int]:
    """The destination's figures, comparable with ``expected_orders``, and its number of distinct ids."""
    with psycopg.connect(dsn) as con:
        exists = con.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not (exists and exists[0]):
            return {"count": 0, "sum_id": None, "sum_qty": None, "sum_amount_cents": None, "customers": 0}, 0
        row = con.execute(
            f"SELECT count(*), sum(id), sum(qty), sum(round(amount * 100)::bigint), "
            f"count(DISTINCT nullif(customer, '')), count(DISTINCT id) FROM {table}"
        ).fetchone()
    assert row is not None
    keys = ["count", "sum_id", "sum_qty", "sum_amount_cents", "customers"]
    return dict(zip(keys, row[:5], strict=True)), int(row[5])


@dataclass(frozen=True)
class Verdict:
    """A run against its ledger. ``problems`` is empty exactly when the run was exactly once and right."""

    expected_rows: int
    loaded_rows: int
    distinct_ids: int
    figures: dict[str, object]
    expected: dict[str, object]
    status: RunStatus | None
    load_rows_out: int | None

    @property
    def lost(self) -> int:
        return max(0, self.expected_rows - self.distinct_ids)

    @property
    def duplicated(self) -> int:
        return self.loaded_rows - self.distinct_ids

    @property
    def wrong_result(self) -> bool:
        return self.status is not None and (
            self.status is not RunStatus.COMPLETED or self.load_rows_out != self.expected_rows
        )

    @property
    def problems(self) -> list[str]:
        found = []
        if self.status is None:
            found.append("no result")
        if self.lost:
            found.append(f"{self.lost} row(s) lost")
        if self.duplicated:
            found.append(f"{self.duplicated} row(s) duplicated")
        if self.figures != self.expected:
            found.append(f"destination figures {self.figures} != ledger {self.expected}")
        if self.wrong_result:
            found.append(f"result {self.status} with {self.load_rows_out} rows loaded")
        return found


def verdict(dsn: str, run: OrdersRun, result: PipelineResult | None) -> Verdict:
    figures, distinct = pg_figures(dsn, run.table)
    expected = run.expected
    load = next((s for s in result.stages if s.stage is Stage.LOAD), None) if result else None
    return Verdict(
        expected_rows=int(str(expected["count"])),
        loaded_rows=int(str(figures["count"])),
        distinct_ids=distinct,
        figures=figures,
        expected=expected,
        status=result.status if result else None,
        load_rows_out=load.rows_out if load else None,
    )


def assert_exactly_once(dsn: str, run: OrdersRun, result: PipelineResult) -> None:
    found = verdict(dsn, run, result)
    errors = [e.message for e in result.errors]
    assert not found.problems, f"run {run.run_id} ({run.label}): {found.problems}; errors: {errors}"
