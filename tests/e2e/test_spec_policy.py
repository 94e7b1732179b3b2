"""End to end, every service a process, on the real broker and PostgreSQL: the issue's attacks on files,
SQL and system names, each submitted as a pipeline request straight to the requests topic (the door that
skips the gateway). Each one is answered REJECTED with the field path and the reason, and nothing is read
or written: no extract task or stream is ever planned for the run, and the thing the attack aimed at (a
file outside the data roots, a table, the ledger, a marker a shell command would create) is untouched.

The services run with the test suite's data roots (``tests/conftest.py``: the repository's data folders,
its tests and the temp dir). The repository's root is not one, so a directory there stands for "anywhere
else on the machine" (the issue's ``authorized_keys``)."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aoetl.client import AoetlClient
from shared.contracts import ExtractTask, PipelineRequest, PipelineResult, RunStatus, StreamRun
from shared.kafka.topics import Topics
from shared.settings import ServiceSettings, load_settings
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import assert_completed, await_result
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LEDGER = "aoetl.aoetl_ledger"


@pytest.fixture
def outside() -> Iterator[Path]:
    """A writable directory outside every data root."""
    path = REPO / f".e2e-outside-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_writable() -> Iterator[Path]:
    """A directory the PostgreSQL server's own user may write, so that a shell command it is tricked into
    running would leave its marker there (pytest's tmp_path is private to the test's user)."""
    path = Path(tempfile.mkdtemp(prefix="aoetl-e2e-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(postgres_dsn: str) -> Iterator[str]:
    name = f"victim_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.{name} AS SELECT g AS id FROM generate_series(1, 3) g")
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")


# ------------------------------------------------------------------------------------------ helpers
def write_csv(path: Path, rows: int = 5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "name"])
        writer.writerows([i, f"n{i}"] for i in range(rows))
    return path


def submit(system: System, request: PipelineRequest) -> tuple[PipelineResult, list[str]]:
    """The run's result, and every task or stream the system planned for it (the work that would read or
    write anything). The watchers open before the request, so they see whatever the run produced; the
    orchestrator writes a run's tasks in the transaction of its decision, so once the result is there,
    reading the topics to their end shows all of them. Tasks and streams are internal topics no CLI
    command reads, so they are watched as the operator (on a secured broker the cli user may not)."""
    kafka = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
    operator = AoetlClient(load_settings(ServiceSettings, kafka=kafka, topic_suffix=system.suffix))
    try:
        with (
            system.client.reader(Topics.RESULTS, from_beginning=False) as results,
            operator.reader(Topics.TASKS, Topics.STREAMS, from_beginning=False) as work,
        ):
            system.client.publish(Topics.REQUESTS, request.run_id, request)
            result = await_result(results, request.run_id)
            planned = [
                f"{type(value).__name__} on {topic}"
                for topic, value in work.drain({Topics.TASKS: ExtractTask, Topics.STREAMS: StreamRun})
                if isinstance(value, ExtractTask | StreamRun) and value.run_id == request.run_id
            ]
    finally:
        operator.close()
    return result, planned


def attack(system: System, spec: dict, **request: object) -> dict[str, str]:
    """Submit ``spec``; assert it is REJECTED and nothing was planned; the reasons by field path."""
    result, planned = submit(system, PipelineRequest(spec=parse_spec(spec), requested_by="e2e", **request))
    assert result.status is RunStatus.REJECTED, (result.status, [e.message for e in result.errors])
    assert planned == [], planned
    reasons = {e.path or "": e.message for e in result.errors}
    assert all(e.error_class == "PolicyViolation" for e in result.errors), result.errors
    return reasons


def spec_of(name: str, source: dict, destination: dict, **extra: object) -> dict:
    return {"name": name, "source": source, "destination": destination, **extra}


def table_rows(postgres_dsn: str, table: str) -> int | None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return None
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else None


# -------------------------------------------------------------------------------------------- tests
def test_a_csv_source_outside_the_data_roots_is_never_read(system: System, tmp_path: Path) -> None:
    reasons = attack(
        system,
        spec_of(
            "read-passwd",
            {"type": "csv", "path": "/etc/passwd", "has_header": False},
            {"type": "jsonl", "path": str(tmp_path / "out")},
        ),
    )
    assert "outside the data roots" in reasons["spec.source.csv.path"]
    assert "root:" not in " ".join(reasons.values())  # not one byte of the file in the answer
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["absolute", "symlink", "dot-dot"])
def test_a_duckdb_destination_outside_the_data_roots_is_never_written(
    system: System, tmp_path: Path, outside: Path, how: str
) -> None:
    source = write_csv(tmp_path / "in.csv")
    if how == "absolute":
        target = str(outside / "authorized_keys")
    elif how == "symlink":  # a link inside a root that leads out of it
        (tmp_path / "link").symlink_to(outside, target_is_directory=True)
        target = str(tmp_path / "link" / "authorized_keys")
    else:
        target = str(tmp_path / os.path.relpath(outside, tmp_path) / "authorized_keys")
    reasons = attack(
        system,
        spec_of(
            "write-outside",
            {"type": "csv", "path": str(source)},
            {"type": "duckdb", "path": target, "table": "keys"},
        ),
    )
    reason = reasons["spec.destination.duckdb.path"]
    assert ("'..' is not allowed" if how == "dot-dot" else "outside the data roots") in reason
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        # Closes the wrapping parentheses as the code on ``main`` builds them (the planner's
        # ``SELECT * FROM (SELECT * FROM (<query>) AS src) AS probe``), runs a shell command through
        # ``COPY ... TO PROGRAM`` (the DSN is a superuser's) and drops a table; ``--`` hides the rest.
        (
            "SELECT 1 AS a) AS src) AS probe; COPY (SELECT 1) TO PROGRAM 'touch {marker}';"
            " DROP TABLE public.{victim}; --",
            "not a valid SQL query",
        ),
        (
            "SELECT 1 AS a; COPY (SELECT 1) TO PROGRAM 'touch {marker}'; DROP TABLE public.{victim}",
            "exactly one statement is allowed, got 3",
        ),
        # One statement that starts like a read and deletes every row (a writable CTE).
        ("WITH gone AS (DELETE FROM public.{victim} RETURNING *) SELECT * FROM gone", "contains DELETE"),
    ],
    ids=["closes-the-wrapper", "several-statements", "writable-cte"],
)
def test_a_query_smuggling_statements_runs_nothing(
    system: System,
    tmp_path: Path,
    server_writable: Path,
    victim: str,
    postgres_dsn: str,
    query: str,
    reason: str,
) -> None:
    marker = server_writable / "pwned"
    reasons = attack(
        system,
        spec_of(
            "smuggle",
            {"type": "postgres", "query": query.format(marker=marker, victim=victim)},
            {"type": "jsonl", "path": str(tmp_path / "out")},
        ),
    )
    assert reason in reasons["spec.source.postgres.query"]
    assert not marker.exists()
    assert table_rows(postgres_dsn, f"public.{victim}") == 3


def test_replace_on_the_systems_ledger_is_refused_and_the_ledger_kept(
    system: System, tmp_path: Path, postgres_dsn: str
) -> None:
    source = write_csv(tmp_path / "in.csv", rows=20)
    table = f"policy_ok_{uuid.uuid4().hex[:8]}"
    first, _ = submit(  # a real load first: the ledger then holds its batches
        system,
        PipelineRequest(
            spec=parse_spec(
                spec_of(
                    "ledger-ok", {"type": "csv", "path": str(source)}, {"type": "postgres", "table": table}
                )
            )
        ),
    )
    assert_completed(first)
    ledger_rows = table_rows(postgres_dsn, LEDGER)
    assert ledger_rows
    reasons = attack(
        system,
        spec_of(
            "truncate-ledger",
            {"type": "csv", "path": str(source)},
            {"type": "postgres", "table": LEDGER, "mode": "replace"},
        ),
    )
    assert "belongs to the system" in reasons["spec.destination.postgres.table"]
    assert table_rows(postgres_dsn, LEDGER) == ledger_rows
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        staged = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'aoetl' AND tablename LIKE 'aoetl_ledger%'"
        ).fetchone()
    assert staged == (1,)  # no staging table for a replace of the ledger either


def test_internal_topics_are_neither_read_nor_written(system: System, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv")
    forge = attack(  # rows written to the requests topic would be requests
        system,
        spec_of(
            "forge-requests",
            {"type": "csv", "path": str(source)},
            {"type": "kafka", "topic": system.client.topic(Topics.REQUESTS)},
        ),
    )
    assert "internal to the system" in forge["spec.destination.kafka.topic"]
    snoop = attack(  # every tenant's results
        system,
        spec_of(
            "snoop-results",
            {"type": "kafka", "topic": system.client.topic(Topics.RESULTS)},
            {"type": "jsonl", "path": str(tmp_path / "out")},
        ),
    )
    assert "internal to the system" in snoop["spec.source.kafka.topic"]
    assert not (tmp_path / "out").exists()


def test_a_run_id_that_climbs_out_of_the_destination_is_refused(system: System, tmp_path: Path) -> None:
    """A jsonl destination puts each run in a directory named by its run id: ``..`` would be its parent."""
    source = write_csv(tmp_path / "in" / "rows.csv")
    reasons = attack(
        system,
        spec_of(
            "climb", {"type": "csv", "path": str(source)}, {"type": "jsonl", "path": str(tmp_path / "out")}
        ),
        run_id="..",
    )
    assert "run id" in reasons["run_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
