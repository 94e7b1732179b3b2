"""Many concurrent small runs: ``--runs`` requests (a 3-row CSV -> PostgreSQL append, default 10,000)
produced at once to the requests topic, then wait for exactly one ``PipelineResult`` per run.

One replica each of extract, transform and load, and the orchestrator with 1, then 2 replicas
(``--replicas 1,2``). Each replica count gets topics of its own (a fresh topic suffix and consumer groups,
as the end-to-end tests isolate themselves), so no run of an earlier round is replayed by a restarted
orchestrator. Reported per round:

- ``submit_s``: building, encoding and producing every request, until the broker acknowledged all;
- ``all_results_s``: from the first request to the last result read (results are counted raw, by key,
  while the runs go: decoding them and the events waits until every result is in, so the bench's own
  process takes little of the 2 cores from the services);
- ``results_per_s``: runs / ``all_results_s``;
- exactly one result per run: results counted per run id; a missing or a duplicated one is a failure,
  and so is a result other than COMPLETED or a row count other than 3 per completed run in the table;
- own planning time: the orchestrators' ``aoetl_planning_seconds`` histogram over the round (scraped from
  their /metrics before and after), p50/p99 as bucket upper bounds: the work on one request, no queueing;
  and the CPU time of the same spans (``aoetl_planning_cpu_seconds``): a wall tail over a flat CPU one is
  the loop thread waiting for a core of the 2 the whole stack shares, not work of its own;
- planning latency: the run's RUN_PLANNED event time (the orchestrator's clock when it planned the run)
  minus the request's ``submitted_at``: queueing behind the other requests included, as a user sees it;
- orchestrator peak RSS (VmHWM of each replica, cumulative over that replica count's rounds) and CPU
  seconds per process (each service, the broker, PostgreSQL) over the round.

Writes bench/results/bench_concurrent.json and prints a table; the median over ``--rounds`` per replica
count.

    python bench/bench_concurrent.py --runs 10000 --rounds 1 --replicas 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.concurrent_figures import (  # noqa: E402
    ROWS_PER_RUN,
    SUMMARY_KEYS,
    count_results,
    latency_summary,
    medians,
    own_planning_quantiles,
    planning_latencies,
    round_ok,
    table_text,
)

STATE = REPO / ".state" / "bench" / "concurrent"
WORKERS = ("extract", "transform", "load")
CSV_TEXT = "id,name,amount\n1,a,1.50\n2,b,2.25\n3,c,3.00\n"

# ---- measuring ----


def spec_for(csv_path: Path, table: str) -> dict:
    return {
        "name": "bench-concurrent",
        "source": {"type": "csv", "path": str(csv_path)},
        "transforms": [{"op": "cast", "columns": {"id": "int64", "amount": "float64"}}],
        "destination": {"type": "postgres", "table": table},
    }


def submit_all(client, producer, spec, runs: int) -> tuple[dict[str, datetime], float]:
    """Produce ``runs`` requests without waiting for each (the broker batches them), then flush; the
    request's own ``submitted_at`` per run id, and the seconds it all took."""
    from shared.contracts import PipelineRequest, Trigger, TriggerKind

    topic = client.requests_topic()
    failures: list[object] = []

    def delivered(error, _message) -> None:
        if error is not None:
            failures.append(error)

    submitted: dict[str, datetime] = {}
    started = time.perf_counter()
    for _ in range(runs):
        request = PipelineRequest(spec=spec, requested_by="bench", trigger=Trigger(kind=TriggerKind.CLI))
        value = client.serde.encode(request)
        while True:
            try:
                producer.produce(topic, value=value, key=request.run_id, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
        submitted[request.run_id] = request.submitted_at
    remaining = producer.flush(120)
    took = time.perf_counter() - started
    if remaining or failures:
        raise RuntimeError(f"{remaining} requests not delivered, {len(failures)} failed: {failures[:3]}")
    return submitted, took


def end_offsets_reader(client, topic: str):
    """A consumer without a group, at the current end of every partition of ``topic``."""
    from confluent_kafka import TopicPartition

    consumer = client.clients.consumer(f"bench-concurrent-{uuid.uuid4().hex}")
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = []
    for p in meta.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        parts.append(TopicPartition(topic, p, high))
    consumer.assign(parts)
    return consumer, parts


def collect_keys(consumer, want: set[str], timeout: float) -> tuple[list[str], list[bytes], float | None]:
    """Read until every run id in ``want`` has a result key (or ``timeout``): the keys, the raw values and
    when (perf_counter) the last wanted one was read."""
    keys: list[str] = []
    values: list[bytes] = []
    missing = set(want)
    last = None
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None:
                continue
            key = (msg.key() or b"").decode()
            keys.append(key)
            values.append(msg.value() or b"")
            if key in missing:
                missing.discard(key)
                last = time.perf_counter()
    return keys, values, last


def drain(consumer, parts, timeout: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Everything up to the partitions' current ends."""
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = True
        for tp in consumer.position(parts):
            if tp.offset < ends[tp.partition]:
                done = False
        if done:
            break
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                out.append((msg.key() or b"", msg.value() or b""))
    return out


def planning_buckets(ports: Sequence[int], name: str = "aoetl_planning_seconds") -> dict[float, float]:
    """``name``'s buckets (cumulative counts by upper bound) summed over orchestrators."""
    from bench import prom

    return prom.scrape(ports, name).buckets


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def one_round(
    client,
    producer,
    csv_path: Path,
    dsn: str,
    pids: dict[int, str],
    runs: int,
    timeout: float,
    orchestrator_ports: Sequence[int] = (),
) -> dict:
    from bench.bench_peers import sql
    from bench.bench_pipeline import cpu_by_process, cpu_used
    from shared.contracts import EventKind, PipelineResult, RunEvent
    from shared.kafka.topics import Topics
    from shared.spec import parse_spec

    table = f"bench_concurrent_{uuid.uuid4().hex[:8]}"
    spec = parse_spec(spec_for(csv_path, table))
    results_reader, result_parts = end_offsets_reader(client, client.topic(Topics.RESULTS))
    events_reader, event_parts = end_offsets_reader(client, client.topic(Topics.EVENTS))
    cpu_before = cpu_by_process(pids)
    planning_before = planning_buckets(orchestrator_ports)
    planning_cpu_before = planning_buckets(orchestrator_ports, "aoetl_planning_cpu_seconds")
    started = time.perf_counter()
    submitted, submit_s = submit_all(client, producer, spec, runs)
    keys, values, last = collect_keys(results_reader, set(submitted), timeout)
    all_results_s = (last - started) if last is not None else None
    cpu = cpu_used(cpu_before, cpu_by_process(pids))
    own_planning = own_planning_quantiles(planning_before, planning_buckets(orchestrator_ports))
    own_planning_cpu = own_planning_quantiles(
        planning_cpu_before, planning_buckets(orchestrator_ports, "aoetl_planning_cpu_seconds")
    )
    # after the clock: anything more (a duplicate) up to the topic's end, then decode
    for key, value in drain(results_reader, result_parts):
        keys.append(key.decode())
        values.append(value)
    results_reader.close()
    statuses: Counter[str] = Counter()
    latencies = []
    for key, value in zip(keys, values, strict=True):
        if key in submitted:
            result = client.serde.decode(value, PipelineResult)
            statuses[result.status.value] += 1
            latencies.append((result.finished_at - submitted[key]).total_seconds())
    planned: dict[str, datetime] = {}
    for _, value in drain(events_reader, event_parts, timeout=120):
        event = client.serde.decode(value, RunEvent)
        if event.kind is EventKind.RUN_PLANNED and event.run_id in submitted:
            planned.setdefault(event.run_id, event.at)
    events_reader.close()
    rows = int(sql(dsn, f"SELECT count(*) FROM {table}") or 0)
    sql(dsn, f"DROP TABLE IF EXISTS {table}")
    counted = count_results(submitted, keys)
    figures = {
        "runs": runs,
        "submit_s": round(submit_s, 2),
        "all_results_s": round(all_results_s, 2) if all_results_s else None,
        "results_per_s": round(runs / all_results_s, 1) if all_results_s else None,
        "results": {**counted, "missing": len(counted["missing"]), "missing_sample": counted["missing"][:5]},
        "statuses": dict(statuses),
        "rows_in_table": rows,
        "planning": latency_summary(planning_latencies(submitted, planned)),
        "planning_own": own_planning,
        "planning_own_cpu": own_planning_cpu,
        "result_latency": latency_summary(latencies),
        "cpu_s": cpu,
        "orchestrator_peak_rss_mib": {
            f"orchestrator-{i}": peak_rss_mib(pid)
            for i, pid in enumerate(pid for pid, name in pids.items() if name.startswith("orchestrator"))
        },
    }
    figures["results"]["missing"] = len(counted["missing"])
    figures["ok"] = round_ok({**figures, "results": counted})
    return figures


def start_system(stack, suffix: str, orchestrators: int, extra_env: Mapping[str, str]) -> list:
    """Topics with ``suffix``, then the services on them (groups of their own), ready."""
    from shared.kafka.admin import ensure_topics
    from shared.kafka.topics import TOPICS, TopicSpec

    ensure_topics(
        stack.kafka_settings, [TopicSpec(t.name + suffix, t.partitions, t.config, t.doc) for t in TOPICS]
    )
    supervisor = stack.supervisor
    started = []
    for name, count in (("orchestrator", orchestrators), *((w, 1) for w in WORKERS)):
        env = {
            **stack.service_env(name),
            "AOETL_TOPIC_SUFFIX": suffix,
            "AOETL_GROUP_ID": f"aoetl-{name}{suffix}",
            "AOETL_POLICY_DATA_ROOTS": json.dumps([str(STATE)]),
            **extra_env,
        }
        started += supervisor.start(name, count, env=env)
    supervisor.wait_ready(started, timeout=120)
    return started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--replicas", default="1,2", help="orchestrator replica counts, one after the other")
    parser.add_argument("--warmup-runs", type=int, default=50, help="uncounted runs first, per replica count")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all results")
    parser.add_argument(
        "--service-env", action="append", default=[], help="NAME=VALUE for every service (an experiment)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_concurrent.json")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.service_env)

    from aoetl.client import AoetlClient
    from aoetl.devstack import DevStack
    from shared.settings import ServiceSettings, load_settings

    STATE.mkdir(parents=True, exist_ok=True)
    csv_path = STATE / "three-rows.csv"
    csv_path.write_text(CSV_TEXT)
    stack = DevStack.from_env(STATE / "stack")  # its own state: never stops a stack it did not start
    endpoints = stack.up()
    os.environ.update(endpoints.env())
    report: dict = {
        "benchmark": f"{args.runs} concurrent {ROWS_PER_RUN}-row csv -> postgres runs via the requests topic",
        "runs": args.runs,
        "rounds": args.rounds,
        "service_env": extra_env,
        "by_replicas": {},
    }
    failed = False
    try:
        for orchestrators in (int(n) for n in args.replicas.split(",")):
            stack.supervisor.stop()
            suffix = f".bc{uuid.uuid4().hex[:8]}"
            started = start_system(stack, suffix, orchestrators, extra_env)
            pids = {p.pid: f"{p.name}-{p.replica}" if p.name == "orchestrator" else p.name for p in started}
            ports = [p.http_port for p in started if p.name == "orchestrator"]
            client = AoetlClient(load_settings(ServiceSettings, topic_suffix=suffix))
            producer = client.clients.producer(**{"linger.ms": 20, "batch.num.messages": 10_000})
            warmup = one_round(
                client, producer, csv_path, endpoints.postgres_dsn, pids, args.warmup_runs, 300
            )
            print(json.dumps({"replicas": orchestrators, "warmup": warmup["all_results_s"]}), flush=True)
            rounds = []
            for index in range(args.rounds):
                figures = one_round(
                    client, producer, csv_path, endpoints.postgres_dsn, pids, args.runs, args.timeout, ports
                )
                failed |= not figures["ok"]
                rounds.append(figures)
                print(json.dumps({"replicas": orchestrators, "round": index, **figures}), flush=True)
            client.close()
            report["by_replicas"][str(orchestrators)] = {
                "median": medians(rounds, SUMMARY_KEYS),
                "orchestrator_peak_rss_mib": rounds[-1]["orchestrator_peak_rss_mib"],
                "rounds": rounds,
            }
        report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stack.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table_text(report))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
