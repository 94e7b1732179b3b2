"""End to end: with the standard ``OTEL_*`` variables pointing at a local OTLP/HTTP receiver, one run is one
trace across every service process, from the gateway (continuing the caller's ``traceparent``) or the CLI
(continuing ``TRACEPARENT`` of its environment) through the orchestrator, extract, transform and load to
the result, with parent links between the hops and the run's ids and row counts on the spans.

A system of its own (``running_system``): its services need the OTEL environment, which the shared one
does not have."""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aoetl.devstack.osproc import free_port
from shared.contracts import PipelineResult, RunStatus, Stage
from shared.kafka.topics import Topics
from tests.e2e.conftest import System, running_system
from tests.helpers import wait_until
from tests.integration.test_gateway import seed_key
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 1, "load": 1}
SERVICES = {"gateway", "orchestrator", "extract", "transform", "load"}
ROWS, BATCH_ROWS = 600, 100
SPAN_KIND_SERVER = 2


@dataclass
class Traced:
    system: System
    api: str
    receiver: OtlpReceiver
    auth: dict[str, str]  # an admin's API key


@pytest.fixture(scope="module")
def traced(kafka_bootstrap: str, postgres_dsn: str) -> Iterator[Traced]:
    with otlp_receiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the receiver while the run is on
        }
        api_port = free_port()
        with running_system(kafka_bootstrap, postgres_dsn, REPLICAS, extra_env=env) as system:
            admin = seed_key(system.env["KAFKA_BOOTSTRAP_SERVERS"], system.suffix)
            gateway = system.supervisor.start(
                "gateway", 1, env={"AOETL_API_PORT": str(api_port), "AOETL_AUTH_API_KEYS": "true"}
            )
            system.supervisor.wait_ready(gateway, timeout=60)
            auth = {"Authorization": f"Bearer {admin.token}"}
            yield Traced(system, f"http://127.0.0.1:{api_port}", receiver, auth)


def orders_spec(tmp_path: Path) -> dict:
    source = tmp_path / "in"
    source.mkdir()
    for part in range(2):
        with (source / f"orders-{part}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "qty"])
            writer.writerows([i, i % 5] for i in range(part * ROWS // 2, (part + 1) * ROWS // 2))
    return {
        "name": f"traced-{uuid.uuid4().hex[:8]}",
        "source": {"type": "csv", "path": str(source / "*.csv")},
        "transforms": [{"op": "cast", "columns": {"id": "int64", "qty": "int64"}}],
        "destination": {"type": "postgres", "table": f"traced_{uuid.uuid4().hex[:8]}"},
        "run": {"batch_rows": BATCH_ROWS, "parallelism": 2},
    }


def result_of(system: System, run_id: str) -> PipelineResult:
    found: list[PipelineResult] = []

    def arrived() -> bool:
        found.extend(r for r in [system.client.find_result(run_id)] if r is not None)
        return bool(found)

    wait_until(arrived, timeout=120, interval=0.5, message=f"a result for run {run_id}")
    return found[0]


def trace_of(
    receiver: OtlpReceiver, trace_id: str, run_id: str, result: PipelineResult, caller: str
) -> list[ReceivedSpan]:
    """The run's spans, once the last of them (the one that produced the result) has arrived and so has
    every span another one names as its parent, but the caller's. Each process exports on its own
    schedule, so a consumer's span can reach the receiver before the producer's span it continues."""

    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.spans_of(trace_id)
        done = any(s.attributes.get("aoetl.result.status") == result.status.value for s in spans)
        received = {s.span_id for s in spans} | {caller}
        dangling = {(s.service, s.name, s.parent_span_id) for s in spans if s.parent_span_id not in received}
        assert not dangling, f"spans whose parent has not arrived: {dangling}"
        return spans if done else None

    spans = wait_until(complete, timeout=30, message=f"the spans of run {run_id} up to its result")
    assert spans is not None
    return spans


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def assert_one_trace(
    spans: list[ReceivedSpan], receiver: OtlpReceiver, run_id: str, trace_id: str, caller: str
) -> None:
    """Every span of the run, in every service, is in this trace, and the trace is one tree hanging from
    the caller's span (``caller``: the traceparent's span id the gateway or the CLI was given)."""
    of_run = [s for s in receiver.spans if s.attributes.get("aoetl.run_id") == run_id]
    assert of_run and {s.trace_id for s in of_run} == {trace_id}
    assert SERVICES - {"gateway"} <= {s.service for s in spans}
    by_id = {s.span_id: s for s in spans}
    outside = {(s.service, s.name, s.parent_span_id) for s in spans if s.parent_span_id not in by_id}
    assert {parent for _, _, parent in outside} == {caller}, outside


def assert_hops(spans: list[ReceivedSpan], result: PipelineResult, pipeline: str) -> list[ReceivedSpan]:
    """Each loaded batch descends from its transform, its extract batch, its task, the request; the row
    counts on the load spans add up to the result's. Returns the chain above the first loaded batch."""
    by_id = {s.span_id: s for s in spans}
    loads = [s for s in spans if s.service == "load" and s.name == "load DataBatch"]
    assert len(loads) == ROWS // BATCH_ROWS
    for load in loads:
        chain = [(s.service, s.name) for s in ancestors(load, by_id)]
        assert chain[:4] == [
            ("transform", "transform DataBatch"),
            ("extract", "extract batch"),
            ("extract", "extract ExtractTask"),
            ("orchestrator", "orchestrate PipelineRequest"),
        ], chain
        assert (
            load.attributes["aoetl.pipeline"] == pipeline
        )  # baggage: a batch does not carry its run's tenant
        assert load.attributes["aoetl.tenant"] == "default"
        assert load.attributes["aoetl.batch.rows"] == BATCH_ROWS
    loaded = next(s for s in result.stages if s.stage is Stage.LOAD)
    assert sum(s.attributes["aoetl.rows_out"] for s in loads) == loaded.rows_out == ROWS
    transforms = [s for s in spans if s.name == "transform DataBatch"]
    assert sum(s.attributes["aoetl.rows_in"] for s in transforms) == ROWS
    extracted = [s for s in spans if s.name == "extract ExtractTask"]
    assert sum(s.attributes["aoetl.rows_out"] for s in extracted) == ROWS
    assert all(s.attributes["aoetl.split_index"] in (0, 1) for s in extracted)
    finished = [s for s in spans if s.attributes.get("aoetl.result.status")]
    assert [(s.service, s.attributes["aoetl.result.status"]) for s in finished] == [
        ("orchestrator", "COMPLETED")
    ]
    return ancestors(loads[0], by_id)


def test_a_run_through_the_gateway_is_one_trace_continuing_the_callers(traced: Traced, tmp_path: Path):
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    spec = orders_spec(tmp_path)
    answer = httpx.post(
        f"{traced.api}/runs",
        json={"spec": spec},
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01", **traced.auth},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    result = result_of(traced.system, run_id)
    assert result.status is RunStatus.COMPLETED, [e.message for e in result.errors]

    spans = trace_of(traced.receiver, trace_id, run_id, result, caller_span)
    assert_one_trace(spans, traced.receiver, run_id, trace_id, caller_span)
    above = assert_hops(spans, result, spec["name"])
    # ... the request came from the gateway's span for it, under its HTTP span, under the caller's
    assert [(s.service, s.name) for s in above[4:6]] == [
        ("gateway", "gateway PipelineRequest"),
        ("gateway", "POST /runs"),
    ]
    http = above[5]
    assert http.kind == SPAN_KIND_SERVER and http.parent_span_id == caller_span
    assert above[4].attributes["aoetl.run_id"] == run_id


def test_a_run_submitted_by_the_cli_is_one_trace_from_the_cli(traced: Traced, tmp_path: Path):
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    spec = orders_spec(tmp_path)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    system = traced.system
    env = {
        **os.environ,
        **system.env,
        **system.cli_env,
        "PYTHONPATH": str(REPO),
        "AOETL_STATE_DIR": str(tmp_path / "cli-state"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": traced.receiver.endpoint,
        "TRACEPARENT": f"00-{trace_id}-{parent}-01",  # a traced parent process (a CI job)
    }
    done = subprocess.run(
        [sys.executable, "-m", "aoetl.cli", "submit", str(spec_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = done.stdout.split()[-1]
    result = result_of(system, run_id)
    assert result.status is RunStatus.COMPLETED, [e.message for e in result.errors]

    spans = trace_of(traced.receiver, trace_id, run_id, result, parent)
    assert_one_trace(spans, traced.receiver, run_id, trace_id, parent)
    above = assert_hops(spans, result, spec["name"])
    cli = above[4]
    assert (cli.service, cli.name, cli.parent_span_id) == ("aoetl-cli", "aoetl PipelineRequest", parent)
    assert cli.attributes["aoetl.run_id"] == run_id and cli.attributes["messaging.destination.name"] == (
        Topics.REQUESTS + system.suffix
    )
