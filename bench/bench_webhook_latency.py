"""Webhook latency at a steady rate: a gateway process on loopback, signed GitHub deliveries at ``--rate`` per
second for ``--duration`` seconds (open loop: each send starts on its schedule, whether or not earlier ones
have answered, so a slow gateway shows up as latency instead of a lower rate).

Measures, per delivery:

* ``ack``: from starting the HTTP request to its 202 answer, which the gateway sends only after Kafka
  acknowledged the ``PipelineRequest`` (acks=all);
* ``visible``: from starting the HTTP request to the ``PipelineRequest`` arriving at a separate consumer
  of the requests topic (includes that consumer's fetch wait, 5 ms max here);
* ``ack_to_first_task``: from the 202 answer to the run's first ``ExtractTask`` arriving on the tasks topic
  (a real orchestrator process validates the request, resolves the definition, plans and publishes it
  in a Kafka transaction; includes the watcher's fetch wait). Baseline for comparison: Airflow and
  Prefect take seconds to start a first task.

Prints one JSON object (p50/p90/p99/max in milliseconds, achieved rate, failures by status).

    .venv/bin/python bench/bench_webhook_latency.py [--rate 200] [--duration 20] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.admin import AdminClient

from shared.avro import AvroSerde
from shared.contracts import ExtractTask, PipelineDefinition, PipelineRequest
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import make_producer, produce_sync
from shared.kafka.topics import TOPICS, Topics, TopicSpec
from shared.settings import KafkaSettings
from shared.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret-0001"


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


def start_service(
    name: str, env: dict[str, str], workdir: Path, port_file: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m services.<name>``; returns once the port it writes to ``port_file`` answers /ready."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env={**os.environ, "AOETL_LOG_LEVEL": "WARNING", **env},
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see {log_path}")
        port = port_file.read_text().strip() if port_file.exists() else ""
        if port:
            url = f"http://127.0.0.1:{port}"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.1)  # readiness poll interval
    proc.kill()
    raise RuntimeError(f"{name} not ready within 60 s")


def start_orchestrator(bootstrap: str, suffix: str, workdir: Path) -> subprocess.Popen[bytes]:
    port_file = workdir / "orchestrator-port"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AOETL_TOPIC_SUFFIX": suffix,
        "AOETL_GROUP_ID": f"bench-orchestrator{suffix}",
        "AOETL_HTTP_PORT": "0",
        "AOETL_PORT_FILE": str(port_file),
    }
    return start_service("orchestrator", env, workdir, port_file)[0]


def start_gateway(bootstrap: str, suffix: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "api-port"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AOETL_TOPIC_SUFFIX": suffix,
        "AOETL_HTTP_PORT": "0",
        "AOETL_API_PORT": "0",
        "AOETL_API_PORT_FILE": str(port_file),
        "AOETL_WEBHOOKS": json.dumps({"github": {"scheme": "github", "secrets": [SECRET]}}),
        "AOETL_TRIGGERS": json.dumps([{"source": "github", "event": "push", "definition": "bench"}]),
    }
    return start_service("gateway", env, workdir, port_file)


async def watch_requests(
    bootstrap: str,
    topic: str,
    seen: dict[str, float],
    ready: asyncio.Event,
    stop: asyncio.Event,
    model: type[PipelineRequest] | type[ExtractTask] = PipelineRequest,
) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=5, isolation_level="read_committed"
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


async def drive(url: str, bootstrap: str, topic: str, rate: float, duration: float) -> dict[str, Any]:
    seen: dict[str, float] = {}
    tasks_seen: dict[str, float] = {}
    ready, tasks_ready, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(watch_requests(bootstrap, topic, seen, ready, stop))
    tasks_topic = topic.replace(Topics.REQUESTS, Topics.TASKS)
    task_watcher = asyncio.create_task(
        watch_requests(bootstrap, tasks_topic, tasks_seen, tasks_ready, stop, ExtractTask)
    )
    await ready.wait()
    await tasks_ready.wait()
    acked_at: dict[str, float] = {}
    started_at: dict[str, float] = {}
    ack: list[float] = []
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def deliver(index: int) -> None:
            body = json.dumps({"ref": "refs/heads/main", "seq": index, "commits": [{"id": index}]}).encode()
            digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            headers = {
                "X-Hub-Signature-256": f"sha256={digest}",
                "X-GitHub-Delivery": f"bench-{index}",
                "X-GitHub-Event": "push",
                "Content-Type": "application/json",
            }
            t0 = time.perf_counter()
            try:
                response = await client.post("/webhooks/github", content=body, headers=headers)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                return
            statuses[str(response.status_code)] += 1
            if response.status_code == 202:
                answered = time.perf_counter()
                ack.append(answered - t0)
                started_at[response.json()["run_id"]] = t0
                acked_at[response.json()["run_id"]] = answered

        total = int(rate * duration)
        begin = time.perf_counter()
        tasks = []
        for index in range(total):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(deliver(index)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        set(started_at) <= set(seen) and set(acked_at) <= set(tasks_seen)
    ):
        await asyncio.sleep(0.05)
    stop.set()
    await watcher
    await task_watcher
    visible = [seen[run_id] - t0 for run_id, t0 in started_at.items() if run_id in seen]
    to_task = [tasks_seen[run_id] - t for run_id, t in acked_at.items() if run_id in tasks_seen]
    return {
        "deliveries": total,
        "target_rate_per_s": rate,
        "achieved_rate_per_s": round(total / elapsed, 1),
        "statuses": dict(statuses),
        "ack_ms": percentiles(ack),
        "visible_ms": percentiles(visible),
        "visible_count": len(visible),
        "ack_to_first_task_ms": percentiles(to_task),
        "first_task_count": len(to_task),
        "ack_mean_ms": round(statistics.fmean(ack) * 1000, 2) if ack else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="deliveries per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady load")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    args = parser.parse_args()

    suffix = f".bench-{uuid.uuid4().hex[:8]}"
    specs = [TopicSpec(t.name + suffix, t.partitions, dict(t.config)) for t in TOPICS]
    ensure_topics(KafkaSettings(bootstrap_servers=args.bootstrap), specs)
    with tempfile.TemporaryDirectory(prefix="aoetl-bench-gw-") as tmp:
        register_definition(args.bootstrap, suffix, Path(tmp))
        orchestrator = start_orchestrator(args.bootstrap, suffix, Path(tmp))
        proc, url = start_gateway(args.bootstrap, suffix, Path(tmp))
        try:
            result = asyncio.run(
                drive(url, args.bootstrap, Topics.REQUESTS + suffix, args.rate, args.duration)
            )
        finally:
            for child in (proc, orchestrator):
                child.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            orchestrator.wait(timeout=30)
            AdminClient({"bootstrap.servers": args.bootstrap}).delete_topics([s.name for s in specs])
    result["gateway_exit_code"] = proc.returncode
    print(json.dumps({"bench": "webhook_latency", **result}, indent=2))


if __name__ == "__main__":
    main()
