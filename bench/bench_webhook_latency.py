"""Webhook latency at a steady rate: the bench's own dev stack (``.state/bench/webhook/webhook-stack``:
broker and PostgreSQL, its topics under a fresh suffix), a gateway and an orchestrator process started on it
(``bench.peers_common.restart_services``), signed GitHub deliveries at ``--rate`` per second for
``--duration`` seconds, ``--rounds`` times (open loop: each send starts on its schedule, whether or not
earlier ones have answered, so a slow gateway shows up as latency instead of a lower rate). The client is
aiohttp, one event loop; every round sends deliveries of its own (its id in each signed body, which is
what identifies a GitHub delivery), so none is answered as a duplicate of an earlier round's.

Measures, per delivery:

* ``ack``: from starting the HTTP request to its 202 answer, which the gateway sends only after Kafka
  acknowledged the ``PipelineRequest`` (acks=all);
* ``visible``: from starting the HTTP request to the ``PipelineRequest`` arriving at a separate consumer
  of the requests topic (in a process of its own, with the tasks topic's: ``watch_topics``);
* ``ack_to_first_task``: from the 202 answer to the run's first ``ExtractTask`` arriving on the tasks topic
  (a real orchestrator process validates the request, resolves the definition, plans and publishes it
  in a Kafka transaction; includes the watcher's fetch wait). Baseline for comparison: Airflow and
  Prefect take seconds to start a first task.

``gateway_side``: the gateway's own histograms over the round (its /metrics before and after: mean exact,
p50/p99 bucket bounds, total): each acknowledged Kafka write by topic and the webhook route's time in the
server, so the ack splits into the writes, the read-back of the claim (the rest of the server's time) and
the client's side (ack minus the server's time); how late its loop woke from a 10 ms sleep and its garbage
collections by generation (``services.gateway.loopwatch``), which hold every request in flight at once.
``client_loop_lag_ms``: the same overshoot for a 1 ms sleep on the client's own loop (what inflates the
client's timing beyond the gateway's). ``cpu_s``: CPU seconds over the round of the gateway, the
orchestrator, the bench's own broker, the client and the watchers' process (the machine has 2 cores).

Prints each round and then one JSON object (per round p50/p90/p99/max in milliseconds, achieved rate,
failures by status; ``median`` over the rounds), also written to bench/results/bench_webhook_latency.json.

    .venv/bin/python bench/bench_webhook_latency.py [--rate 200] [--duration 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aoetl.devstack import DevStack  # noqa: E402
from aoetl.devstack.osproc import free_port  # noqa: E402
from bench import prom  # noqa: E402
from bench.concurrent_figures import medians  # noqa: E402
from bench.peers_common import restart_services  # noqa: E402
from shared.avro import AvroSerde  # noqa: E402
from shared.contracts import ExtractTask, PipelineDefinition, PipelineRequest  # noqa: E402
from shared.kafka.admin import ensure_topics  # noqa: E402
from shared.kafka.clients import make_producer, produce_sync  # noqa: E402
from shared.kafka.topics import TOPICS, Topics, TopicSpec  # noqa: E402
from shared.settings import KafkaSettings  # noqa: E402
from shared.spec import parse_spec  # noqa: E402

SECRET = "bench-webhook-secret-0001"
PUBLISH, HTTP = "aoetl_gateway_publish_seconds", "aoetl_gateway_http_request_duration_seconds"


def gateway_side(port: int, suffix: str) -> dict[str, prom.Histogram]:
    """The gateway's own timings so far (its /metrics): each Kafka write of an acceptance, by topic (a
    claim and a STARTED record on the deliveries topic per delivery, its request on the requests topic),
    and the webhook route from arrival to answer."""
    return {
        "deliveries_publish": prom.scrape([port], PUBLISH, topic=Topics.DELIVERIES + suffix),
        "requests_publish": prom.scrape([port], PUBLISH, topic=Topics.REQUESTS + suffix),
        "http_webhook": prom.scrape([port], HTTP, route="/webhooks/{source}", method="POST"),
        "loop_lag": prom.scrape([port], "aoetl_gateway_loop_lag_seconds"),
        **{
            f"gc_gen{gen}": prom.scrape([port], "aoetl_gateway_gc_pause_seconds", generation=str(gen))
            for gen in (0, 1, 2)
        },
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2)}


def register_definition(bootstrap: str, suffix: str, workdir: Path) -> None:
    """The definition the webhooks start: the delivery's commits are the records (an event source)."""
    spec = parse_spec(
        {
            "name": "bench",
            "source": {"type": "event", "records_path": "commits"},
            "destination": {"type": "jsonl", "path": str(workdir / "out")},
        }
    )
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap))
    produce_sync(
        producer,
        Topics.DEFINITIONS + suffix,
        AvroSerde().encode(PipelineDefinition(name="bench", spec=spec)),
        key="bench",
    )


def service_env(suffix: str, api_port: int) -> dict[str, dict[str, str]]:
    """Per service, what it gets beside the stack's endpoints: the bench's topics and groups, and for the
    gateway its API port, the webhook source and the trigger that starts the ``bench`` definition."""
    common = {"AOETL_TOPIC_SUFFIX": suffix, "AOETL_LOG_LEVEL": "WARNING"}
    return {
        "orchestrator": {**common, "AOETL_GROUP_ID": f"bench-orchestrator{suffix}"},
        "gateway": {
            **common,
            "AOETL_AUTH_API_KEYS": "false",  # webhooks are signed; no API key is asked of them anyway
            "AOETL_API_PORT": str(api_port),
            "AOETL_WEBHOOKS": json.dumps({"github": {"scheme": "github", "secrets": [SECRET]}}),
            "AOETL_TRIGGERS": json.dumps([{"source": "github", "event": "push", "definition": "bench"}]),
        },
    }


async def watch_requests(
    bootstrap: str,
    topic: str,
    seen: dict[str, float],
    ready: asyncio.Event,
    stop: asyncio.Event,
    model: type[PipelineRequest] | type[ExtractTask] = PipelineRequest,
) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        # the broker answers a fetch as soon as a record is there (fetch_min_bytes=1): the wait only bounds
        # an empty poll, and a short one would have the broker answer hundreds of empty polls a second
        fetch_max_wait_ms=200,
        isolation_level="read_committed",
    )
    serde = AvroSerde()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve "end" now, before the first delivery is sent
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            arrived = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        seen.setdefault(serde.decode(record.value, model).run_id, arrived)
    finally:
        await consumer.stop()


async def loop_lag(lags: list[float], stop: asyncio.Event) -> None:
    """How late a 1 ms sleep wakes on this (the client's) loop: whatever holds the loop also delays the
    moment an answer is timed, so a late wake-up here is latency the gateway did not cause."""
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - asked - 0.001)


def watch_topics(bootstrap: str, topics: tuple[str, str], ready: Any, conn: Any) -> None:
    """The watchers' process (``spawn``): follows the requests and the tasks topics, sets ``ready`` once both
    are positioned, then waits for the run ids to expect (``conn``) and sends back when each arrived, once
    all have or after 30 s. A process of its own so that decoding what it reads never holds the client's
    loop (which would delay the moment an answer is timed); ``time.perf_counter`` is the system's
    monotonic clock, the same in both processes."""

    async def main() -> None:
        seen: dict[str, float] = {}
        tasks_seen: dict[str, float] = {}
        ready_requests, ready_tasks, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        watchers = [
            asyncio.create_task(watch_requests(bootstrap, topics[0], seen, ready_requests, stop)),
            asyncio.create_task(
                watch_requests(bootstrap, topics[1], tasks_seen, ready_tasks, stop, ExtractTask)
            ),
        ]
        await ready_requests.wait()
        await ready_tasks.wait()
        ready.set()
        while not conn.poll():
            await asyncio.sleep(0.05)
        requested, acked = conn.recv()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (requested <= set(seen) and acked <= set(tasks_seen)):
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*watchers)
        conn.send((seen, tasks_seen))

    asyncio.run(main())


async def drive(url: str, rate: float, duration: float, round_id: str) -> dict[str, Any]:
    lags: list[float] = []
    sending = asyncio.Event()
    probe = asyncio.create_task(loop_lag(lags, sending))
    acked_at: dict[str, float] = {}
    started_at: dict[str, float] = {}
    ack: list[float] = []
    statuses: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=500)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:

        async def deliver(index: int) -> None:
            # a GitHub delivery is known by its signed body, not its delivery id header: the round's id is in
            # the body, so every round's deliveries are new to the gateway's replay memory
            body = json.dumps(
                {"ref": "refs/heads/main", "round": round_id, "seq": index, "commits": [{"id": index}]}
            ).encode()
            digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            headers = {
                "X-Hub-Signature-256": f"sha256={digest}",
                "X-GitHub-Delivery": f"bench-{round_id}-{index}",
                "X-GitHub-Event": "push",
                "Content-Type": "application/json",
            }
            t0 = time.perf_counter()
            try:
                async with client.post("/webhooks/github", data=body, headers=headers) as response:
                    answer = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
                return
            statuses[str(status)] += 1
            if status == 202:
                answered = time.perf_counter()
                ack.append(answered - t0)
                run_id = json.loads(answer)["run_id"]
                started_at[run_id] = t0
                acked_at[run_id] = answered

        total = int(rate * duration)
        begin = time.perf_counter()
        tasks = []
        for index in range(total):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(deliver(index)))
        sent_s = time.perf_counter() - begin
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
        sending.set()
        await probe
    return {
        "started_at": started_at,
        "acked_at": acked_at,
        "deliveries": total,
        "target_rate_per_s": rate,
        "sent_rate_per_s": round(total / sent_s, 1),  # how well the client kept its schedule
        "achieved_rate_per_s": round(len(ack) / elapsed, 1),  # acknowledged deliveries per second
        "statuses": dict(statuses),
        "ack_ms": percentiles(ack),
        "ack_mean_ms": round(statistics.fmean(ack) * 1000, 2) if ack else None,
        "client_loop_lag_ms": percentiles(lags),
    }


MEDIAN_KEYS = (
    "achieved_rate_per_s",
    "ack_ms.p50",
    "ack_ms.p99",
    "visible_ms.p99",
    "ack_to_first_task_ms.p50",
    "ack_to_first_task_ms.p99",
    "first_task_count",
    "gateway_side.deliveries_publish.mean_ms",
    "gateway_side.requests_publish.mean_ms",
    "gateway_side.http_webhook.mean_ms",
    "gateway_side.http_webhook.p99_ms",
    "gateway_side.loop_lag.p99_ms",
    "gateway_side.gc_gen2.total_s",
    "client_loop_lag_ms.p99",
    "cpu_s.gateway",
    "cpu_s.orchestrator",
    "cpu_s.kafka",
    "cpu_s.client",
)


def cpu_snapshot(services: dict[int, str], stack_dir: Path) -> dict[str, float]:
    """CPU seconds so far of the bench's gateway and orchestrator, its own broker (other stacks' brokers on
    the machine are not counted) and this process (the client)."""
    found: dict[str, float] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = proc.info
        if info["pid"] in services:
            group = services[info["pid"]]
        elif info["pid"] == os.getpid():
            group = "client"
        elif info["name"] == "java" and any(str(stack_dir) in a for a in info["cmdline"] or ()):
            group = "kafka"
        else:
            continue
        times = info["cpu_times"]
        if times is not None:
            found[group] = found.get(group, 0.0) + times.user + times.system
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="deliveries per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady load per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_webhook_latency.json")
    args = parser.parse_args()

    state = ROOT / ".state" / "bench" / "webhook"
    stack_dir = state / "webhook-stack"
    stack = DevStack.from_env(stack_dir)  # its own: never stops a stack it did not start
    bootstrap = stack.up().kafka_bootstrap
    suffix = f".bench-{uuid.uuid4().hex[:8]}"
    specs = [TopicSpec(t.name + suffix, t.partitions, dict(t.config)) for t in TOPICS]
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), specs)
    rounds: list[dict[str, Any]] = []
    try:
        register_definition(bootstrap, suffix, state)
        api_port = free_port()
        pids = restart_services(stack.supervisor, ("orchestrator", "gateway"), service_env(suffix, api_port))
        print(json.dumps({"pids": pids}), flush=True)
        url = f"http://127.0.0.1:{api_port}"
        (gateway,) = stack.supervisor.alive("gateway")
        # the client's imports (contracts, the dev stack, Kafka clients) out of its full collections, which
        # would otherwise hold its loop ~0.2 s now and then and time every answer due then that much late
        gc.collect()
        gc.freeze()
        for index in range(args.rounds):
            spawn = multiprocessing.get_context("spawn")
            ready, (conn, child_conn) = spawn.Event(), spawn.Pipe()
            topics = (Topics.REQUESTS + suffix, Topics.TASKS + suffix)
            watcher = spawn.Process(target=watch_topics, args=(bootstrap, topics, ready, child_conn))
            watcher.start()
            if not ready.wait(120):
                raise RuntimeError("the watchers did not start")
            before = gateway_side(gateway.http_port, suffix)
            cpu_before = cpu_snapshot({**pids, watcher.pid: "watchers"}, stack_dir)
            figures = asyncio.run(drive(url, args.rate, args.duration, f"{suffix}-{index}"))
            cpu_after = cpu_snapshot({**pids, watcher.pid: "watchers"}, stack_dir)
            started_at, acked_at = figures.pop("started_at"), figures.pop("acked_at")
            conn.send((set(started_at), set(acked_at)))
            seen, tasks_seen = conn.recv()
            watcher.join()
            visible = [seen[run_id] - t0 for run_id, t0 in started_at.items() if run_id in seen]
            to_task = [tasks_seen[run_id] - t for run_id, t in acked_at.items() if run_id in tasks_seen]
            figures |= {
                "visible_ms": percentiles(visible),
                "visible_count": len(visible),
                "ack_to_first_task_ms": percentiles(to_task),
                "first_task_count": len(to_task),
            }
            after = gateway_side(gateway.http_port, suffix)
            figures["gateway_side"] = {
                k: {**prom.summary(step := after[k].minus(before[k])), "total_s": round(step.sum, 3)}
                for k in after
            }
            figures["cpu_s"] = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in sorted(cpu_after.items())}
            print(json.dumps({"round": index, **figures}), flush=True)
            rounds.append(figures)
    finally:
        stack.supervisor.stop()
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([s.name for s in specs])
        stack.down()
    report = {
        "bench": "webhook_latency",
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "median": medians(rounds, MEDIAN_KEYS),
        "rounds": rounds,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
