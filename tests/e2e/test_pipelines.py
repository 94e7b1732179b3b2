"""End to end: pipeline requests go in, every service runs as its own process (two replicas of extract,
transform and load), and the destination holds exactly the expected rows, checked against figures
computed independently from the source files with the standard library."""

from __future__ import annotations

import csv
import json
import random
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.avro.convert import to_datum
from shared.contracts import (
    Alert,
    AlertKind,
    DeadLetter,
    PipelineRequest,
    PipelineResult,
    RunStatus,
    Stage,
)
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import Topics, TopicSpec
from shared.spec import parse_spec
from tests.e2e.conftest import System
from tests.helpers import wait_until
from tests.support import secure_kafka
from tests.support.json_http import Reply, Request, json_server

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 120


# ------------------------------------------------------------------------------------------ helpers
def write_orders(directory: Path, rows: int, files: int = 2, seed: int = 1) -> list[dict[str, str]]:
    """Orders CSVs; returns the rows as written (strings), the independent ground truth."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out: list[dict[str, str]] = []
    per_file = -(-rows // files)
    for f in range(files):
        with (directory / f"orders-{f}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, ["id", "customer", "status", "amount", "qty"])
            w.writeheader()
            for i in range(f * per_file, min(rows, (f + 1) * per_file)):
                row = {
                    "id": str(i),
                    "customer": "" if i % 97 == 0 else f"C{rng.randint(1, 500)}",
                    "status": rng.choice(["paid", "paid", "shipped", "cancelled"]),
                    "amount": f"{rng.uniform(1, 500):.2f}",
                    "qty": str(rng.randint(1, 5)),
                }
                w.writerow(row)
                out.append(row)
    return out


ORDER_STEPS = [
    {"op": "cast", "columns": {"id": "int64", "amount": "float64", "qty": "int64"}},
    {"op": "filter", "expr": "status <> 'cancelled'"},
    {"op": "derive", "column": "total", "expr": "amount * qty"},
]


def expected_orders(rows: list[dict[str, str]]) -> dict[str, object]:
    kept = [r for r in rows if r["status"] != "cancelled"]
    return {
        "count": len(kept),
        "sum_id": sum(int(r["id"]) for r in kept),
        "sum_qty": sum(int(r["qty"]) for r in kept),
        "sum_amount_cents": sum(int(Decimal(r["amount"]) * 100) for r in kept),
        "customers": len({r["customer"] for r in kept if r["customer"]}),
    }


def run_spec(system: System, spec_dict: dict, *, payload: bytes | None = None) -> PipelineResult:
    spec = parse_spec(spec_dict)
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        request = PipelineRequest(spec=spec, payload=payload, requested_by="e2e")
        system.client.publish(Topics.REQUESTS, request.run_id, request)
        return await_result(reader, request.run_id)


def await_result(reader, run_id: str) -> PipelineResult:  # type: ignore[no-untyped-def]
    found: list[PipelineResult] = []

    def arrived() -> bool:
        for _, value in reader.poll({Topics.RESULTS: PipelineResult}):
            if isinstance(value, PipelineResult) and value.run_id == run_id:
                found.append(value)
        return bool(found)

    wait_until(arrived, timeout=RESULT_TIMEOUT, message=f"a result for run {run_id}")
    return found[0]


def stage(result: PipelineResult, which: Stage):  # type: ignore[no-untyped-def]
    return next(s for s in result.stages if s.stage is which)


def assert_completed(result: PipelineResult) -> None:
    assert result.status is RunStatus.COMPLETED, [e.message for e in result.errors]


def open_duckdb_when_unlocked(path: Path) -> duckdb.DuckDBPyConnection:
    """Open a destination file read-only once no writer holds it. DuckDB allows one writing process per
    file, and after a run's result the load service may still open the file briefly for a redelivered
    batch (its ledger then skips it), so a reader waits for the lock instead of failing on it."""

    def opened() -> duckdb.DuckDBPyConnection | None:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            return None

    con = wait_until(opened, timeout=30, message=f"the write lock on {path} to be released")
    assert con is not None
    return con


def duckdb_figures(path: Path, table: str) -> dict[str, object]:
    with open_duckdb_when_unlocked(path) as con:
        count, sum_id, sum_qty, cents, customers = con.execute(
            f"SELECT count(*), sum(id), sum(qty), sum(CAST(round(amount * 100) AS BIGINT)), "
            f"count(DISTINCT nullif(customer, '')) FROM {table}"
        ).fetchone()
    return {
        "count": count,
        "sum_id": sum_id,
        "sum_qty": sum_qty,
        "sum_amount_cents": cents,
        "customers": customers,
    }


def orders_spec(name: str, source: dict, destination: dict, **run: object) -> dict:
    return {
        "name": name,
        "source": source,
        "transforms": ORDER_STEPS,
        "destination": destination,
        "run": {"batch_rows": 1500, **run},
    }


# -------------------------------------------------------------------------------------------- tests
def test_csv_to_postgres_with_two_replicas_of_each_stage(system: System, tmp_path: Path, postgres_dsn: str):
    rows = write_orders(tmp_path / "in", 12_000, files=3)
    table = f"orders_{uuid.uuid4().hex[:8]}"
    spec = orders_spec(
        "orders-pg",
        {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        {"type": "postgres", "table": table},
        parallelism=6,
    )
    result = run_spec(system, spec)
    assert_completed(result)
    want = expected_orders(rows)
    assert stage(result, Stage.EXTRACT).rows_out == len(rows)
    assert stage(result, Stage.LOAD).rows_out == want["count"]
    with psycopg.connect(postgres_dsn) as con:
        got = con.execute(
            f"SELECT count(*), sum(id), sum(qty), sum(round(amount * 100)::bigint), "
            f"count(DISTINCT nullif(customer, '')) FROM {table}"
        ).fetchone()
    assert dict(zip(want, got, strict=True)) == want


@pytest.fixture
def http_orders(system: System, tmp_path: Path) -> Iterator[tuple[str, list[dict[str, str]]]]:
    rows = write_orders(tmp_path / "http", 2_500, files=1, seed=5)
    pages = [rows[i : i + 400] for i in range(0, len(rows), 400)]

    def respond(request: Request) -> Reply:
        page = int(request.query.get("page", "1"))
        return Reply(200, {"data": pages[page - 1] if page <= len(pages) else []})

    # the port the system's egress allow list opens (any other loopback port is refused)
    with json_server(respond, system.allowed_http_port) as server:
        yield f"{server.base}/orders", rows


SOURCE_KINDS = ["csv", "jsonl", "parquet", "postgres", "http", "event"]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_source_type_end_to_end(
    system: System, tmp_path: Path, postgres_dsn: str, kind: str, http_orders
):  # type: ignore[no-untyped-def]
    payload = None
    if kind == "http":
        url, rows = http_orders
        source: dict = {"type": "http", "url": url, "records_path": "data", "pagination": "page"}
    else:
        rows = write_orders(tmp_path / "in", 3_000, files=2, seed=3)
        if kind == "csv":
            source = {"type": "csv", "path": str(tmp_path / "in" / "*.csv")}
        elif kind == "jsonl":
            with (tmp_path / "orders.jsonl").open("w") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
            source = {"type": "jsonl", "path": str(tmp_path / "orders.jsonl")}
        elif kind == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), tmp_path / "orders.parquet", row_group_size=700)
            source = {"type": "parquet", "path": str(tmp_path / "orders.parquet")}
        elif kind == "postgres":
            src = f"src_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(postgres_dsn) as con:
                con.execute(
                    f"CREATE TABLE {src} (id text, customer text, status text, amount text, qty text)"
                )
                with con.cursor().copy(f"COPY {src} FROM STDIN") as copy:
                    for r in rows:
                        copy.write_row([r["id"], r["customer"], r["status"], r["amount"], r["qty"]])
            source = {"type": "postgres", "table": src}
        else:
            payload = json.dumps({"orders": rows}).encode()
            source = {"type": "event", "records_path": "orders"}
    db = tmp_path / "out.duckdb"
    result = run_spec(
        system,
        orders_spec(f"src-{kind}", source, {"type": "duckdb", "path": str(db), "table": "orders"}),
        payload=payload,
    )
    assert_completed(result)
    assert duckdb_figures(db, "orders") == expected_orders(rows)


@pytest.mark.parametrize("kind", ["postgres", "duckdb", "parquet", "jsonl", "kafka"])
def test_every_destination_type_end_to_end(system: System, tmp_path: Path, postgres_dsn: str, kind: str):
    rows = write_orders(tmp_path / "in", 4_000, files=2, seed=11)
    want = expected_orders(rows)
    out = tmp_path / "out"
    name = f"dest_{uuid.uuid4().hex[:8]}"
    destination: dict = {
        "postgres": {"type": "postgres", "table": name},
        "duckdb": {"type": "duckdb", "path": str(out / "w.duckdb"), "table": name},
        "parquet": {"type": "parquet", "path": str(out)},
        "jsonl": {"type": "jsonl", "path": str(out)},
        "kafka": {"type": "kafka", "topic": f"e2e.out.{name}"},  # aoetl.* topics are the system's own
    }[kind]
    if kind == "kafka":  # topics are the operator's: a secured broker creates none because a client names it
        operator = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
        ensure_topics(operator, [TopicSpec(destination["topic"], 1)])
    result = run_spec(
        system,
        orders_spec(f"dest-{kind}", {"type": "csv", "path": str(tmp_path / "in" / "*.csv")}, destination),
    )
    assert_completed(result)
    assert stage(result, Stage.LOAD).rows_out == want["count"]
    query = (
        "SELECT count(*), sum(id), sum(qty), sum(CAST(round(amount * 100) AS BIGINT)), "
        "count(DISTINCT nullif(customer, '')) FROM {src}"
    )
    (written,) = result.written
    assert (written.destination, written.rows) == (kind, want["count"])
    if kind in ("postgres", "duckdb"):  # the SQL sinks cannot know (services.load.sinks.ledger)
        assert written.bytes is None
    value_sizes: list[int] = []
    if kind == "postgres":
        with psycopg.connect(postgres_dsn) as con:
            got = con.execute(
                query.format(src=name).replace(
                    "CAST(round(amount * 100) AS BIGINT)", "round(amount * 100)::bigint"
                )
            ).fetchone()
    elif kind == "duckdb":
        got = open_duckdb_when_unlocked(out / "w.duckdb").execute(query.format(src=name)).fetchone()
    elif kind in ("parquet", "jsonl"):
        run_dir = next(p for p in out.iterdir() if p.is_dir())
        assert (run_dir / "_SUCCESS").exists()
        reader = "read_parquet" if kind == "parquet" else "read_json_auto"
        got = duckdb.connect().execute(query.format(src=f"{reader}('{run_dir}/part-*.{kind}')")).fetchone()
        # the result's bytes are the parts' sizes on disk (the _SUCCESS marker is not data)
        assert written.bytes == sum(p.stat().st_size for p in run_dir.glob(f"part-*.{kind}")) > 0
    else:
        from services.load.sinks.avro_rows import decode_row  # noqa: F401  (format documented there)

        got = _kafka_rows_figures(system, destination["topic"], want["count"], value_sizes)
        assert written.bytes == sum(value_sizes) > 0  # the produced record values
    assert dict(zip(want, got, strict=True)) == want


def _kafka_rows_figures(system: System, topic: str, count: int, value_sizes: list[int]) -> tuple:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    # the system's own serde: row schemas are resolved from its schemas topic (with its topic suffix)
    serde = system.client.serde
    consumer = Consumer(
        secure_kafka.operator_config(
            system.env["KAFKA_BOOTSTRAP_SERVERS"], group_id=uuid.uuid4().hex, isolation_level="read_committed"
        )
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    rows: list[dict] = []

    def all_read() -> bool:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is None:
                rows.append(serde.decode_record(msg.value()))
                value_sizes.append(len(msg.value()))
        return len(rows) >= count

    wait_until(all_read, timeout=30, message=f"{count} rows on {topic}")
    consumer.close()
    return (
        len(rows),
        sum(r["id"] for r in rows),
        sum(r["qty"] for r in rows),
        sum(round(r["amount"] * 100) for r in rows),
        len({r["customer"] for r in rows if r["customer"]}),
    )


def test_invalid_spec_is_rejected_with_precise_reasons(system: System):
    good = PipelineRequest(
        spec=parse_spec(
            orders_spec(
                "bad-merge", {"type": "csv", "path": "/nowhere.csv"}, {"type": "postgres", "table": "t"}
            )
        )
    )
    datum = to_datum(good)
    # Avro-valid but not a valid pipeline: a merge without keys, and a pipeline name with spaces.
    name, dest = datum["spec"]["destination"]
    datum["spec"]["destination"] = (name, {**dest, "mode": "merge", "keys": []})
    datum["spec"]["name"] = "Bad Name"
    raw = system.client.serde.encode_record(PipelineRequest.avro_name, datum)
    with system.client.reader(Topics.RESULTS, Topics.DEAD_LETTERS, from_beginning=False) as reader:
        from shared.kafka.clients import produce_sync

        produce_sync(system.client._producer, system.client.topic(Topics.REQUESTS), raw, key=good.run_id)
        result = await_result(reader, good.run_id)
    assert result.status is RunStatus.REJECTED
    reasons = {e.path: e.message for e in result.errors}
    assert "spec.name" in reasons and "pattern" in reasons["spec.name"]
    assert any(p and p.startswith("spec.destination") and "keys" in m for p, m in reasons.items())


def test_missing_source_fails_the_run_and_raises_an_alert(system: System, tmp_path: Path):
    with system.client.reader(Topics.ALERTS, from_beginning=False) as alerts:
        result = run_spec(
            system,
            orders_spec(
                "missing",
                {"type": "csv", "path": str(tmp_path / "nope-*.csv")},
                {"type": "jsonl", "path": str(tmp_path)},
            ),
        )
        assert result.status is RunStatus.FAILED
        assert result.errors and "nope" in result.errors[0].message
        seen: list[Alert] = []

        def alerted() -> bool:
            seen.extend(
                v
                for _, v in alerts.poll({Topics.ALERTS: Alert})
                if isinstance(v, Alert) and v.run_id == result.run_id
            )
            return bool(seen)

        wait_until(alerted, timeout=30, message="a RUN_FAILED alert")
    assert seen[0].kind is AlertKind.RUN_FAILED


def test_quarantined_rows_reach_the_dead_letter_topic_with_the_rule_while_the_rest_load(
    system: System, tmp_path: Path
):
    rows = write_orders(tmp_path / "in", 3_000, files=1, seed=9)
    db = tmp_path / "q.duckdb"
    spec = orders_spec(
        "quarantine",
        {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        {"type": "duckdb", "path": str(db), "table": "orders"},
    )
    spec["quality"] = [
        {"rule": "not_null", "columns": ["customer"], "on_fail": "quarantine", "name": "has-customer"}
    ]
    with system.client.reader(Topics.DEAD_LETTERS, from_beginning=False) as dlq:
        result = run_spec(system, spec)
        assert_completed(result)
        kept = [r for r in rows if r["status"] != "cancelled"]
        bad = [r for r in kept if not r["customer"]]
        assert bad, "the generator must produce rows without a customer"
        assert stage(result, Stage.TRANSFORM).rows_rejected == len(bad)
        assert duckdb_figures(db, "orders")["count"] == len(kept) - len(bad)
        letters: list[DeadLetter] = []

        def all_quarantined() -> bool:
            letters.extend(
                v
                for _, v in dlq.poll({Topics.DEAD_LETTERS: DeadLetter})
                if isinstance(v, DeadLetter) and v.run_id == result.run_id
            )
            return sum(_rows_in(letter) for letter in letters) >= len(bad)

        wait_until(all_quarantined, timeout=30, message="quarantined rows in the dead-letter topic")
    assert {letter.rule for letter in letters} == {"has-customer"}
    ids = sorted(i for letter in letters for i in _ids_in(letter))
    assert ids == sorted(int(r["id"]) for r in bad)


def _rows_in(letter: DeadLetter) -> int:
    from shared.batch import decode_table

    return decode_table(letter.payload).num_rows


def _ids_in(letter: DeadLetter) -> list[int]:
    from shared.batch import decode_table

    return [int(i) for i in decode_table(letter.payload).column("id").to_pylist()]


def test_agent_heals_a_failing_quality_rule_by_quarantine_and_the_run_completes(
    system: System, tmp_path: Path
):
    rows = write_orders(tmp_path / "in", 4_000, files=2, seed=13)
    db = tmp_path / "heal.duckdb"
    spec = orders_spec(
        "healing",
        {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        {"type": "duckdb", "path": str(db), "table": "orders"},
    )
    spec["quality"] = [
        {"rule": "not_null", "columns": ["customer"], "on_fail": "fail", "name": "has-customer"}
    ]
    result = run_spec(system, spec)
    assert_completed(result)
    assert result.decisions and result.decisions[0].startswith("quarantine_bad_rows")
    kept = [r for r in rows if r["status"] != "cancelled"]
    bad = [r for r in kept if not r["customer"]]
    assert duckdb_figures(db, "orders")["count"] == len(kept) - len(bad)
    assert stage(result, Stage.TRANSFORM).rows_rejected == len(bad)


def test_an_intent_without_a_configured_model_is_rejected_with_the_reason(system: System):
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        request = PipelineRequest(intent="load orders.csv into postgres, drop cancelled orders")
        system.client.publish(Topics.REQUESTS, request.run_id, request)
        result = await_result(reader, request.run_id)
    assert result.status is RunStatus.REJECTED
    assert any("AOETL_LLM_MODEL" in e.message for e in result.errors), result.errors


def test_incremental_postgres_source_continues_after_the_last_completed_run(
    system: System, postgres_dsn: str
):
    src, dst = f"inc_src_{uuid.uuid4().hex[:6]}", f"inc_dst_{uuid.uuid4().hex[:6]}"

    def insert(first: int, count: int) -> None:
        with psycopg.connect(postgres_dsn) as con:
            con.execute(
                f"INSERT INTO {src} SELECT i, timestamptz '2026-01-01' + i * interval '1 second', i * 2 "
                f"FROM generate_series({first}, {first + count - 1}) AS i"
            )

    with psycopg.connect(postgres_dsn) as con:
        con.execute(f"CREATE TABLE {src} (id bigint, updated_at timestamptz, amount bigint)")
    insert(0, 1_000)
    spec = {
        "name": f"incremental-{src}",
        "source": {"type": "postgres", "table": src, "cursor_column": "updated_at"},
        "destination": {"type": "postgres", "table": dst},
    }

    def loaded() -> tuple[int, int, int]:
        with psycopg.connect(postgres_dsn) as con:
            row = con.execute(
                f"SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0) FROM {dst}"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    first = run_spec(system, spec)
    assert_completed(first)
    assert loaded() == (1_000, 1_000, sum(range(1_000)))
    insert(1_000, 500)
    second = run_spec(system, spec)  # the same spec: the watermark of the first run says where to start
    assert_completed(second)
    assert stage(second, Stage.EXTRACT).rows_out == 500
    assert loaded() == (1_500, 1_500, sum(range(1_500)))
    third = run_spec(system, spec)
    assert_completed(third)
    assert stage(third, Stage.EXTRACT).rows_out == 0
    assert loaded()[0] == 1_500
