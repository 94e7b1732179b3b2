"""Continuous pipeline benchmark: JSON events produced to a topic at a steady rate, read by a continuous
run (kafka source -> cast + derive -> PostgreSQL append), every service its own process, one replica each.

End-to-end latency per event = the time its row was written in PostgreSQL (a ``clock_timestamp()``
column default, evaluated inside the transaction that commits the batch with its ledger row) minus the
time the event was produced (``produced_ms`` in the event, taken just before ``produce()``). Both clocks
are this machine's. Each step runs one rate for ``--seconds``; its first ``--warmup`` seconds are not
counted. A step "keeps up" when the backlog drains within 2 s after the producer stops. Prints JSON (and
writes bench/results/continuous.json).

    python bench/bench_continuous.py --rates 5000,10000,20000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aoetl.client import AoetlClient  # noqa: E402
from aoetl.devstack import DevStack  # noqa: E402
from aoetl.devstack.processes import ServiceSupervisor  # noqa: E402
from shared.contracts import PipelineResult  # noqa: E402
from shared.kafka.admin import ensure_topics  # noqa: E402
from shared.kafka.clients import make_producer  # noqa: E402
from shared.kafka.topics import TOPICS, Topics, TopicSpec  # noqa: E402
from shared.settings import KafkaSettings, ServiceSettings, load_settings  # noqa: E402
from shared.spec import parse_spec  # noqa: E402

SERVICES = {"orchestrator": 1, "extract": 1, "transform": 1, "load": 1}
TICK_S = 0.005  # the producer's pacing step


def spec_for(topic: str, table: str, batch_rows: int) -> dict:
    return {
        "name": f"bench-stream-{uuid.uuid4().hex[:6]}",
        "source": {"type": "kafka", "topic": topic, "format": "json"},
        "transforms": [
            {"op": "cast", "columns": {"id": "int64", "produced_ms": "float64", "amount": "float64"}},
            {"op": "derive", "column": "total", "expr": "amount * qty"},
        ],
        "destination": {"type": "postgres", "table": table},
        "run": {"batch_rows": batch_rows},
    }


def produce_at(producer: Any, topic: str, rate: int, seconds: float, first_id: int) -> int:
    """Produce ``rate`` events/s for ``seconds``, paced in small steps; returns the next id."""
    next_id = first_id
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = first_id + int(elapsed * rate)
        while next_id < due:
            event = {
                "id": next_id,
                "produced_ms": time.time() * 1000,
                "user": f"u{next_id % 997}",
                "amount": (next_id % 1000) / 10,
                "qty": next_id % 7,
            }
            try:
                producer.produce(topic, json.dumps(event).encode(), key=event["user"])
            except BufferError:
                producer.poll(0.01)
                continue
            next_id += 1
        producer.poll(0)
        time.sleep(TICK_S)
    producer.flush(60)
    return next_id


def count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


def latency(dsn: str, table: str, lo: int, hi: int) -> dict[str, float]:
    """Percentiles (ms) of row-written minus event-produced, for ids in [lo, hi)."""
    with psycopg.connect(dsn) as con:
        row = con.execute(
            "WITH l AS (SELECT id, extract(epoch FROM loaded_at) * 1000 - produced_ms AS ms FROM "
            f"{table} WHERE id >= %s AND id < %s) SELECT count(*), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),"
            " percentile_cont(0.999) WITHIN GROUP (ORDER BY ms), max(ms), count(DISTINCT id) FROM l",
            (lo, hi),
        ).fetchone()
    assert row is not None
    count, p50, p99, p999, top, distinct = row
    if not count == distinct == hi - lo:
        with psycopg.connect(dsn) as con:
            sample = con.execute(f"SELECT min(id), max(id), count(*) FROM {table}").fetchone()
        raise AssertionError(f"exactly once broken: {count} rows, {distinct} ids, {hi - lo} sent; {sample}")
    return {
        "rows": int(count),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "p999_ms": round(float(p999), 1),
        "max_ms": round(float(top), 1),
    }


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="5000,10000,20000", help="events/s per step, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--linger-ms", type=int, default=100)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "continuous.json")
    args = parser.parse_args()

    state = REPO / ".state" / "bench"
    stack = DevStack.from_env(state / "continuous-stack")
    endpoints = stack.up()
    os.environ.update(endpoints.env())
    dsn, bootstrap = endpoints.postgres_dsn, endpoints.kafka_bootstrap
    suffix = f".bench{uuid.uuid4().hex[:6]}"
    ensure_topics(
        KafkaSettings(bootstrap_servers=bootstrap),
        [TopicSpec(t.name + suffix, t.partitions, t.config, t.doc) for t in TOPICS],
    )
    topic = f"bench.events{suffix}"
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [TopicSpec(topic, args.partitions)])
    table = f"bench_stream_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(
            f'CREATE TABLE {table} (id bigint, produced_ms double precision, "user" text,'
            " amount double precision, qty bigint, total double precision,"
            " loaded_at timestamptz DEFAULT clock_timestamp())"
        )

    run_dir = state / f"continuous-{suffix.strip('.')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **endpoints.env(),
        "AOETL_TOPIC_SUFFIX": suffix,
        "AOETL_LOG_FORMAT": "text",
        "AOETL_STREAM_LINGER_MS": str(args.linger_ms),
    }
    supervisor = ServiceSupervisor(run_dir, env)
    report: dict = {
        "benchmark": "continuous: kafka topic (json) -> cast + derive -> postgres (append), exactly once",
        "latency": "row written in PostgreSQL (clock_timestamp, in the committing transaction)"
        " - event produced",
        "machine_cores": os.cpu_count(),
        "partitions": args.partitions,
        "linger_ms": args.linger_ms,
        "steps": [],
    }
    settings = load_settings(
        ServiceSettings, kafka=KafkaSettings(bootstrap_servers=bootstrap), topic_suffix=suffix
    )
    client = AoetlClient(settings)
    succeeded = False
    try:
        started = []
        for name, count in SERVICES.items():
            started += supervisor.start(name, count, env={"AOETL_GROUP_ID": f"aoetl-{name}{suffix}"})
        supervisor.wait_ready(started, timeout=120)
        pids = {p.name: p.pid for p in started}
        request = client.submit(parse_spec(spec_for(topic, table, args.batch_rows)))
        tuning: dict[str, Any] = {"linger.ms": 2}
        producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), **tuning)
        next_id = 0
        # warm-up: the stream joins its group and every service opens its connections
        next_id = produce_at(producer, topic, 200, 3.0, next_id)
        deadline = time.monotonic() + 60
        while count_rows(dsn, table) < next_id and time.monotonic() < deadline:
            time.sleep(0.2)
        for rate in (int(r) for r in args.rates.split(",")):
            first = next_id
            cpu_before = cpu_seconds(pids)
            wall = time.perf_counter()
            next_id = produce_at(producer, topic, rate, args.seconds, next_id)
            produced_s = time.perf_counter() - wall
            stopped = time.monotonic()
            drain_deadline = stopped + 120
            while count_rows(dsn, table) < next_id:
                if time.monotonic() > drain_deadline:
                    raise RuntimeError(f"{next_id} events, {count_rows(dsn, table)} rows after 120 s")
                time.sleep(0.05)
            drained_s = time.monotonic() - stopped
            cpu_after = cpu_seconds(pids)
            counted_from = first + int(rate * args.warmup)
            step = {
                "target_rate": rate,
                "produced_rate": round((next_id - first) / produced_s),
                "events": next_id - first,
                "drain_after_producer_stop_s": round(drained_s, 2),
                "kept_up": drained_s < 2.0,
                "latency_after_warmup": latency(dsn, table, counted_from, next_id),
                "cpu_percent_per_service": {
                    n: round(100 * (cpu_after[n] - cpu_before[n]) / (produced_s + drained_s), 1) for n in pids
                },
            }
            print(json.dumps(step), flush=True)
            report["steps"].append(step)
        total = count_rows(dsn, table)
        assert total == next_id, f"{total} rows for {next_id} events"
        with client.reader(Topics.RESULTS, from_beginning=False) as reader:
            client.stop(request.run_id)
            deadline = time.monotonic() + 60
            result = None
            while result is None and time.monotonic() < deadline:
                for _, value in reader.poll({Topics.RESULTS: PipelineResult}):
                    if isinstance(value, PipelineResult) and value.run_id == request.run_id:
                        result = value
        report["result"] = None if result is None else result.status.value
        kept = [s for s in report["steps"] if s["kept_up"] and s["latency_after_warmup"]["p99_ms"] <= 1000]
        report["highest_rate_with_p99_under_1s"] = max((s["target_rate"] for s in kept), default=None)
        succeeded = True
    finally:
        client.close()
        supervisor.stop()
        with psycopg.connect(dsn, autocommit=True) as con:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        if succeeded:  # else the services' logs stay for a look
            shutil.rmtree(run_dir, ignore_errors=True)
        stack.down()
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
