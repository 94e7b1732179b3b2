"""aoetl against quix-streams on a continuous drain: one pre-produced topic of ``--events`` small JSON events
(``id``, ``customer``, ``amount``, ``qty``), drained into the dev stack's PostgreSQL by each tool in turn, in
one run, alternating (the order rotates each round), median of ``--rounds``:

- ``quix``: a quix-streams application (``bench/peers_quix.py``, from the peers' own venv) with its PostgreSQL
  sink, at-least-once, its default 5 s checkpoint (``--quix-commit-interval``);
- ``aoetl``: a continuous pipeline (``kafka`` source, cast + derive, ``postgres`` append, exactly-once),
  submitted to the services already running (orchestrator, extract, transform, load; one each), spec
  defaults (``run.batch_rows`` 50,000, the extract's 200 ms linger), stopped once every id is in.

Both do the same work: cast ``id``/``qty``/``amount``, derive ``total = amount * qty``, append to a table
the bench created, whose ``loaded_at`` column defaults to ``clock_timestamp()`` (the time a row was written,
in the writing transaction). Each drain starts from the topic's beginning in a consumer group of its own.
Throughput = events / (the first time the last id was written - the tool's start: the quix process started,
the aoetl run submitted), so start-up and group join count; the steady rate is the 10th..90th percentile of
the ids' first write times. Exactly-once: rows, distinct ids, duplicates and missing ids in the table
(quix-streams is at-least-once: duplicates are reported, never removed). Writes
bench/results/bench_peers_stream.json: every round, the medians, CPU seconds of the quix process (rusage)
and of PostgreSQL, the broker and each aoetl service (/proc deltas), machine info.

    python bench/bench_peers_stream.py --events 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.peers_common import (  # noqa: E402
    children_cpu,
    cpu_snapshot,
    ensure_peers_venv,
    machine_info,
    peer_versions,
    restart_services,
)

TOOLS = ("quix", "aoetl")
STATE = REPO / ".state" / "bench" / "peers-stream"
TABLE_DDL = (
    "id bigint, customer text, amount double precision, qty bigint, total double precision, "
    "loaded_at timestamptz DEFAULT clock_timestamp()"
)
# Per id its first write: duplicates never move the end of a drain, and count once as "distinct".
DRAIN_SQL = (
    "WITH firsts AS (SELECT id, min(extract(epoch FROM loaded_at)) AS t FROM {table} GROUP BY id) "
    "SELECT (SELECT count(*) FROM {table}), count(*), min(t), max(t), "
    "percentile_cont(0.1) WITHIN GROUP (ORDER BY t), percentile_cont(0.9) WITHIN GROUP (ORDER BY t), "
    "count(*) FILTER (WHERE id < 0 OR id >= {events}) FROM firsts"
)

# ---- pure parts (tests/unit/test_bench_peers_stream.py) ----


def event(i: int) -> dict[str, Any]:
    """The i-th event: small, JSON, numbers in it as JSON numbers (both tools cast them)."""
    return {"id": i, "customer": f"c{i % 997}", "amount": (i % 1000) / 10, "qty": i % 7}


def aoetl_spec(name: str, topic: str, table: str) -> dict:
    return {
        "name": name,
        "source": {"type": "kafka", "topic": topic, "format": "json"},
        "transforms": [
            {"op": "cast", "columns": {"id": "int64", "qty": "int64", "amount": "float64"}},
            {"op": "derive", "column": "total", "expr": "amount * qty"},
        ],
        "destination": {"type": "postgres", "table": table},
    }


def quix_command(
    python: Path, bootstrap: str, topic: str, group: str, dsn: str, table: str, commit_interval: float
) -> list[str]:
    return [
        str(python),
        str(REPO / "bench" / "peers_quix.py"),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--dsn",
        dsn,
        "--table",
        table,
        "--commit-interval",
        str(commit_interval),
    ]


def drain_figures(events: int, started_at: float, row: Sequence[Any]) -> dict[str, Any]:
    """One drain's figures from ``DRAIN_SQL``'s row (rows, distinct ids, first/last first-write epoch,
    their 10th/90th percentiles, ids outside the topic's) and the epoch the tool started."""
    rows, distinct, first, last, p10, p90, strangers = row
    drain_s = float(last) - started_at if distinct else None
    steady_s = float(p90) - float(p10) if distinct else 0.0
    return {
        "rows": int(rows),
        "distinct_ids": int(distinct),
        "duplicates": int(rows) - int(distinct),
        "missing": events - int(distinct) + int(strangers),
        "exactly_once": int(rows) == int(distinct) == events and not strangers,
        "first_row_after_s": round(float(first) - started_at, 3) if distinct else None,
        "drain_s": round(drain_s, 3) if drain_s is not None else None,
        "events_per_s": round(events / drain_s) if drain_s else None,
        "steady_events_per_s": round(0.8 * events / steady_s) if steady_s > 0 else None,
    }


def summarise(rounds: list[dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Per tool: median throughput (whole drain and steady), median drain seconds, duplicates and missing
    ids over all rounds, whether every round was exactly-once; the aoetl/quix ratio of the medians."""
    out: dict[str, dict[str, Any]] = {}
    for tool in rounds[0]:
        mine = [r[tool] for r in rounds if tool in r]

        def median(key: str, mine: list[dict] = mine) -> float | None:
            values = [f[key] for f in mine if f.get(key) is not None]
            return statistics.median(values) if values else None

        out[tool] = {
            "rounds": len(mine),
            "events_per_s": median("events_per_s"),
            "steady_events_per_s": median("steady_events_per_s"),
            "drain_s": median("drain_s"),
            "first_row_after_s": median("first_row_after_s"),
            "duplicates_total": sum(f["duplicates"] for f in mine),
            "missing_total": sum(f["missing"] for f in mine),
            "exactly_once_every_round": all(f["exactly_once"] for f in mine),
        }
    if "aoetl" in out and "quix" in out:
        for key in ("events_per_s", "steady_events_per_s"):
            ours, theirs = out["aoetl"][key], out["quix"][key]
            out["aoetl"][f"{key}_vs_quix"] = round(ours / theirs, 2) if ours and theirs else None
    return out


def table_text(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| tool | events/s | steady events/s | drain s | first row s | vs quix | exactly once | duplicates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tool, f in summary.items():
        ratio = f.get("events_per_s_vs_quix")
        lines.append(
            f"| {tool} | {_int(f['events_per_s'])} | {_int(f['steady_events_per_s'])} | {f['drain_s']} "
            f"| {f['first_row_after_s']} | {f'{ratio:.2f}x' if ratio else '-'} "
            f"| {'yes' if f['exactly_once_every_round'] else 'no'} | {f['duplicates_total']} |"
        )
    return "\n".join(lines)


def _int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


# ---- measuring ----


def produce(bootstrap: str, topic: str, events: int) -> float:
    """Every event into the topic (keyed by customer, so spread over its partitions); the seconds it took."""
    from shared.kafka.clients import make_producer
    from shared.settings import KafkaSettings

    producer = make_producer(
        KafkaSettings(bootstrap_servers=bootstrap), **{"linger.ms": 20, "batch.size": 1 << 20}
    )
    started = time.perf_counter()
    for i in range(events):
        value = event(i)
        while True:
            try:
                producer.produce(topic, json.dumps(value).encode(), key=value["customer"].encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "events left unsent"
    return time.perf_counter() - started


def wait_for_ids(con: Any, table: str, events: int, stalled_s: float = 120.0) -> None:
    """Until every id is in the table (a cheap count first, distinct ids only once the count is there);
    fails when the table gains no row for ``stalled_s``."""
    last, changed = -1, time.monotonic()
    while True:
        (rows,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        if rows >= events:
            (distinct,) = con.execute(f"SELECT count(DISTINCT id) FROM {table}").fetchone()
            if distinct >= events:
                return
        if rows != last:
            last, changed = rows, time.monotonic()
        elif time.monotonic() - changed > stalled_s:
            raise RuntimeError(f"{table}: {rows} rows for {events} events, none new for {stalled_s:.0f} s")
        time.sleep(0.25)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-events", type=int, default=100_000, help="one uncounted drain per tool")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--quix-commit-interval", type=float, default=5.0)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_peers_stream.json")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    assert tools and set(tools) <= set(TOOLS), tools

    import psycopg

    from aoetl.client import AoetlClient
    from aoetl.devstack import DevStack
    from bench.bench_peers import STATE as BATCH_STATE
    from bench.bench_peers import rotated
    from bench.bench_pipeline import cpu_used
    from shared.contracts import PipelineResult
    from shared.kafka.admin import ensure_topics
    from shared.kafka.topics import Topics, TopicSpec
    from shared.settings import KafkaSettings
    from shared.spec import parse_spec

    peers_python = ensure_peers_venv() if "quix" in tools else None
    STATE.mkdir(parents=True, exist_ok=True)
    stack = DevStack.from_env(BATCH_STATE / "stack")  # the batch bench's: one stack for both halves
    endpoints = stack.up()
    os.environ.update(endpoints.env())
    dsn, bootstrap = endpoints.postgres_dsn, endpoints.kafka_bootstrap
    env = {**os.environ, "NO_COLOR": "1"}
    tag = uuid.uuid4().hex[:8]
    topics = {"warmup": f"bench.peers.warmup.{tag}", "events": f"bench.peers.events.{tag}"}
    rounds: list[dict[str, dict]] = []
    warmups: dict[str, dict] = {}
    try:
        ensure_topics(
            KafkaSettings(bootstrap_servers=bootstrap),
            [TopicSpec(t, args.partitions) for t in topics.values()],
        )
        produced_s = {
            "warmup": produce(bootstrap, topics["warmup"], args.warmup_events) if args.warmup_events else 0.0,
            "events": produce(bootstrap, topics["events"], args.events),
        }
        print(json.dumps({"produced": args.events, "seconds": round(produced_s["events"], 2)}), flush=True)
        pids = restart_services(stack.supervisor)
        client = AoetlClient()
        con = psycopg.connect(dsn, autocommit=True)

        def run_quix(topic: str, table: str, events: int) -> dict:
            assert peers_python is not None
            command = quix_command(
                peers_python, bootstrap, topic, f"bench-quix-{table}", dsn, table, args.quix_commit_interval
            )
            cpu, started_at = children_cpu(), time.time()
            pipe = subprocess.PIPE
            proc = subprocess.Popen(command, env=env, cwd=STATE, stdout=pipe, stderr=pipe)
            try:
                wait_for_ids(con, table, events)
            finally:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"quix exited {proc.returncode}: {err.decode()[-2000:]}")
            own = json.loads(out.decode().strip().splitlines()[-1])
            return {"started_at": started_at, "process_cpu_s": round(children_cpu() - cpu, 2), "own": own}

        def run_aoetl(topic: str, table: str, events: int) -> dict:
            spec = parse_spec(aoetl_spec(f"bench-peers-stream-{table[-8:]}", topic, table))
            with client.reader(Topics.RESULTS, from_beginning=False) as reader:
                started_at = time.time()
                request = client.submit(spec)
                wait_for_ids(con, table, events)
                client.stop(request.run_id)
                deadline, result = time.monotonic() + 120, None
                while result is None and time.monotonic() < deadline:
                    for _, value in reader.poll({Topics.RESULTS: PipelineResult}):
                        if isinstance(value, PipelineResult) and value.run_id == request.run_id:
                            result = value
            assert result is not None, f"no result for {request.run_id} after its stop"
            return {"started_at": started_at, "run_id": request.run_id, "result": result.status.value}

        runners: dict[str, Callable[[str, str, int], dict]] = {"quix": run_quix, "aoetl": run_aoetl}

        def measure(tool: str, topic: str, events: int) -> dict:
            table = f"bench_stream_{tool}_{uuid.uuid4().hex[:8]}"
            con.execute(f"CREATE TABLE {table} ({TABLE_DDL})")
            cpu_before = cpu_snapshot(pids)
            figures = runners[tool](topic, table, events)
            figures["cpu_s"] = cpu_used(cpu_before, cpu_snapshot(pids))  # postgres, kafka, services
            row = con.execute(DRAIN_SQL.format(table=table, events=events)).fetchone()
            figures = {**drain_figures(events, figures.pop("started_at"), row), **figures}
            con.execute(f"DROP TABLE {table}")
            return figures

        if args.warmup_events:
            for tool in tools:
                warmups[tool] = measure(tool, topics["warmup"], args.warmup_events)
                print(json.dumps({"warmup": tool, "events_per_s": warmups[tool]["events_per_s"]}), flush=True)
        for index in range(args.rounds):
            figures = {tool: measure(tool, topics["events"], args.events) for tool in rotated(tools, index)}
            rounds.append(figures)
            brief = {t: [f["events_per_s"], f["duplicates"], f["missing"]] for t, f in figures.items()}
            print(json.dumps({"round": index, "events_per_s, duplicates, missing": brief}), flush=True)
        con.close()
        client.close()
        versions = peer_versions(peers_python, {"quixstreams": "quixstreams"}) if peers_python else {}
        machine = machine_info(dsn, versions)  # before the stack stops: it asks PostgreSQL its version
    finally:
        stack.down()

    summary = summarise(rounds)
    report = {
        "benchmark": "continuous drain: pre-produced kafka topic (json) -> cast + derive -> postgres append",
        "events": args.events,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "produce_seconds": round(produced_s["events"], 2),
        "quix_commit_interval_s": args.quix_commit_interval,
        "throughput": "events / (last id's first write - tool start); steady: 10th..90th pct of writes",
        "median": summary,
        "warmups": warmups,
        "round_figures": rounds,
        "machine": machine,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table_text(summary))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
