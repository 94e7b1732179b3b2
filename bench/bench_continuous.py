"""Continuous pipeline benchmark: JSON events produced to a topic at a steady rate, read by a continuous
run (kafka source -> cast + derive -> PostgreSQL append), every service its own process, one replica each.

End-to-end latency per event = the time its row was written in PostgreSQL (a ``clock_timestamp()``
column default, evaluated inside the transaction that commits the batch with its ledger row) minus the
time the event was produced (``produced_ms`` in the event, taken just before ``produce()``). Both clocks
are this machine's. Each step runs one rate for ``--seconds``; its first ``--warmup`` seconds are not
counted. A step "keeps up" when the backlog drains within 2 s after the producer stops.

Each step produces exactly ``rate * seconds`` events, shared by ``--producers`` processes (one Python
producer cannot drive 100k events/s), and checks exactly once over all of them. Where the time goes, per
step, from the services' own /metrics (scraped before and after it): the extract window
(``stream_linger_ms``) and events per extract batch, and the per-batch wall time of transform and load
(``aoetl_batch_seconds``, decode to commit: mean exact, p50/p99 bucket bounds). A rate given more than once
(``--rates 20000,20000,20000``) is a repeat: ``median_by_rate`` holds the medians over its steps. Prints
JSON (and writes bench/results/continuous.json).

    python bench/bench_continuous.py --rates 5000,10000,20000 --seconds 30 [--producers 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
from bench import prom  # noqa: E402
from bench.concurrent_figures import medians  # noqa: E402
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


def produce_ids(producer: Any, topic: str, ids: range, rate: float, start_at: float) -> dict[str, int]:
    """Produce one event per id of ``ids``, the i-th at ``start_at + i / rate`` (wall clock), then flush:
    an exact count, paced in small steps. Returns how many the broker acknowledged and how many failed."""
    outcome = {"acked": 0, "failed": 0}

    def delivered(error: Any, _message: Any) -> None:
        outcome["failed" if error is not None else "acked"] += 1

    if (delay := start_at - time.time()) > 0:
        time.sleep(delay)
    started = time.perf_counter()
    sent = 0
    while sent < len(ids):
        due = min(len(ids), int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            next_id = ids[sent]
            event = {
                "id": next_id,
                "produced_ms": time.time() * 1000,
                "user": f"u{next_id % 997}",
                "amount": (next_id % 1000) / 10,
                "qty": next_id % 7,
            }
            try:
                producer.produce(topic, json.dumps(event).encode(), key=event["user"], on_delivery=delivered)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(TICK_S)
    if producer.flush(60):
        raise RuntimeError(f"{topic}: events still unacknowledged 60 s after the last was produced")
    return outcome


def producer_main(bootstrap: str, topic: str, commands: Any, done: Any) -> None:
    """One producer process: ``(ids, rate, start_at)`` commands until ``None``, one outcome each."""
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), **{"linger.ms": 2})
    while (command := commands.get()) is not None:
        done.put(produce_ids(producer, topic, *command))


class Producers:
    """``count`` producer processes (one Python process tops out near 25k events/s of JSON here), each
    given an interleaved share of a step's ids (``first + k``, ``first + k + count``, ...): every step
    produces exactly ``rate * seconds`` events with ids ``[first, first + events)``."""

    def __init__(self, count: int, bootstrap: str, topic: str) -> None:
        context = multiprocessing.get_context("spawn")  # no librdkafka state inherited through fork
        self.commands = [context.Queue() for _ in range(count)]
        self.done = context.Queue()
        self.procs = [
            context.Process(target=producer_main, args=(bootstrap, topic, q, self.done), daemon=True)
            for q in self.commands
        ]
        for proc in self.procs:
            proc.start()

    def produce(self, first: int, events: int, rate: float) -> dict[str, int]:
        count = len(self.commands)
        start_at = time.time() + 0.2  # every producer starts on the same tick
        for k, queue in enumerate(self.commands):
            queue.put((range(first + k, first + events, count), rate / count, start_at))
        outcomes = [self.done.get(timeout=3600) for _ in self.commands]
        return {key: sum(o[key] for o in outcomes) for key in ("acked", "failed")}

    def close(self) -> None:
        for queue in self.commands:
            queue.put(None)
        for proc in self.procs:
            proc.join(timeout=30)


def count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


def latency(dsn: str, table: str, lo: int, hi: int, since_ms: float) -> dict[str, float]:
    """Exactly once for ids in [lo, hi) (one row each), and percentiles (ms) of row-written minus
    event-produced for those produced at ``since_ms`` or later (the step after its warm-up)."""
    with psycopg.connect(dsn) as con:
        row = con.execute(
            f"SELECT count(*), count(DISTINCT id) FROM {table} WHERE id >= %s AND id < %s", (lo, hi)
        ).fetchone()
        assert row is not None
        if not row[0] == row[1] == hi - lo:
            sample = con.execute(f"SELECT min(id), max(id), count(*) FROM {table}").fetchone()
            raise AssertionError(f"exactly once broken: {row[0]} rows, {row[1]} ids of {hi - lo}; {sample}")
        row = con.execute(
            "WITH l AS (SELECT extract(epoch FROM loaded_at) * 1000 - produced_ms AS ms FROM "
            f"{table} WHERE id >= %s AND id < %s AND produced_ms >= %s) SELECT count(*), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),"
            " percentile_cont(0.999) WITHIN GROUP (ORDER BY ms), max(ms) FROM l",
            (lo, hi, since_ms),
        ).fetchone()
    assert row is not None
    count, p50, p99, p999, top = row
    return {
        "rows": int(count),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "p999_ms": round(float(p999), 1),
        "max_ms": round(float(top), 1),
    }


def where_time_goes(ports: dict[str, int]) -> dict[str, Any]:
    """The services' own counters now: per-batch wall time of transform and load (``aoetl_batch_seconds``,
    decode to commit) and the extract streams' batches and records; a step is the difference of two."""
    return {
        **{name: prom.scrape([ports[name]], "aoetl_batch_seconds") for name in ("transform", "load")},
        # the Kafka transactions' commits alone, in the two stages whose outputs go to Kafka
        **{
            f"{name}_commit": prom.scrape([ports[name]], "aoetl_transaction_commit_seconds")
            for name in ("extract", "transform")
        },
        "extract_batches": prom.counter_total([ports["extract"]], "aoetl_stream_batches"),
        "extract_records": prom.counter_total([ports["extract"]], "aoetl_stream_records"),
    }


def step_breakdown(before: dict[str, Any], after: dict[str, Any], linger_ms: int) -> dict[str, Any]:
    batches = after["extract_batches"] - before["extract_batches"]
    records = after["extract_records"] - before["extract_records"]
    return {
        "extract": {
            "window_ms": linger_ms,  # a batch closes this long after its first event (or when full)
            "batches": int(batches),
            "events_per_batch": round(records / batches, 1) if batches else None,
        },
        **{
            f"{name}_per_batch": prom.summary(after[name].minus(before[name]))
            for name in ("transform", "load")
        },
        **{
            f"{name}_commit": prom.summary(after[f"{name}_commit"].minus(before[f"{name}_commit"]))
            for name in ("extract", "transform")
        },
    }


MEDIAN_KEYS = (
    "latency_after_warmup.p50_ms",
    "latency_after_warmup.p99_ms",
    "latency_after_warmup.p999_ms",
    "produced_rate",
    "drain_after_producer_stop_s",
    "breakdown.extract.events_per_batch",
    "breakdown.transform_per_batch.mean_ms",
    "breakdown.transform_per_batch.p99_ms",
    "breakdown.load_per_batch.mean_ms",
    "breakdown.load_per_batch.p99_ms",
    "breakdown.extract_commit.mean_ms",
    "breakdown.transform_commit.mean_ms",
)


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
    parser.add_argument("--producers", type=int, default=1, help="producer processes sharing each step")
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
        ports = {p.name: p.http_port for p in started}
        request = client.submit(parse_spec(spec_for(topic, table, args.batch_rows)))
        producers = Producers(args.producers, bootstrap, topic)
        next_id = 0
        # warm-up: the stream joins its group, every service and producer opens its connections
        warm = 200 * 3
        producers.produce(next_id, warm, 200)
        next_id += warm
        deadline = time.monotonic() + 60
        while count_rows(dsn, table) < next_id and time.monotonic() < deadline:
            time.sleep(0.2)
        for rate in (int(r) for r in args.rates.split(",")):
            first, events = next_id, int(rate * args.seconds)
            cpu_before, metrics_before = cpu_seconds(pids), where_time_goes(ports)
            counted_since_ms = (time.time() + 0.2 + args.warmup) * 1000  # producers start 0.2 s from now
            wall = time.perf_counter()
            outcome = producers.produce(first, events, rate)
            produced_s = time.perf_counter() - wall - 0.2
            next_id = first + events
            stopped = time.monotonic()
            drain_deadline = stopped + 120
            while count_rows(dsn, table) < next_id:
                if time.monotonic() > drain_deadline:
                    raise RuntimeError(f"{next_id} events, {count_rows(dsn, table)} rows after 120 s")
                time.sleep(0.05)
            drained_s = time.monotonic() - stopped
            cpu_after, metrics_after = cpu_seconds(pids), where_time_goes(ports)
            step = {
                "target_rate": rate,
                "producers": args.producers,
                "events": events,
                "acked": outcome["acked"],
                "delivery_failures": outcome["failed"],
                "produced_rate": round(events / produced_s),
                "drain_after_producer_stop_s": round(drained_s, 2),
                "kept_up": drained_s < 2.0,
                "latency_after_warmup": latency(dsn, table, first, next_id, counted_since_ms),
                "breakdown": step_breakdown(metrics_before, metrics_after, args.linger_ms),
                "cpu_percent_per_service": {
                    n: round(100 * (cpu_after[n] - cpu_before[n]) / (produced_s + drained_s), 1) for n in pids
                },
            }
            print(json.dumps(step), flush=True)
            report["steps"].append(step)
        producers.close()
        report["median_by_rate"] = {
            str(rate): {
                "steps": len(same),
                **medians(same, MEDIAN_KEYS),
            }
            for rate in sorted({s["target_rate"] for s in report["steps"]})
            if (same := [s for s in report["steps"] if s["target_rate"] == rate])
        }
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
