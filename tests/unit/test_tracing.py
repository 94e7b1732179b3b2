"""``shared.tracing``: when tracing is on, the Kafka header carrier, the spans of the task loop's message
handling (names, attributes, baggage, redacted errors) and the headers of every output; and, in a fresh
interpreter, that tracing off imports no SDK in a service and nothing of OpenTelemetry in the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared.avro import AvroSerde
from shared.contracts import DataBatch, EventKind, ExtractTask, PipelineRequest, RunEvent, Split, Stage
from shared.errors import ConfigurationError
from shared.kafka.topics import Topics
from shared.logging import current_context
from shared.processing import LoopConfig, MessageContext, Output
from shared.processing.handling import MessageHandling
from shared.processing.retries import PartitionRetries, RetryPolicy
from shared.redaction import forget_all_secrets, register_secret
from shared.spec import parse_spec
from shared.tracing import propagation, setup, spans
from tests.support.otel_memory import recording
from tests.unit.kafka_fakes import FakeRecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SPEC = parse_spec(
    {
        "name": "orders",
        "source": {"type": "csv", "path": "/data/in/*.csv"},
        "destination": {"type": "duckdb", "path": "/data/out.duckdb", "table": "orders"},
    }
)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def finished() -> Iterator[InMemorySpanExporter]:
    with recording() as exporter:
        yield exporter


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
    ],
)
def test_tracing_is_on_only_where_the_environment_says_where_spans_go(env: dict[str, str], names: list[str]):
    assert setup.exporter_names(env) == names
    assert setup.enabled(env) is bool(names)


def test_an_exporter_that_is_not_installed_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigurationError, match="zipkin"):
        setup._exporter("zipkin")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        setup._exporter("otlp")


# --------------------------------------------------------------------------------------- propagation
def test_the_kafka_carrier_reads_any_case_and_bytes_and_keeps_only_our_baggage():
    headers: list[tuple[str, Any]] = [
        ("other", b"x"),
        ("TraceParent", PARENT.encode()),
        ("baggage", b"aoetl.tenant=acme,secret=hunter2"),
    ]
    ctx = propagation.extract(headers)
    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == TRACE_ID
    assert baggage.get_all(ctx) == {"aoetl.tenant": "acme"}
    again = dict(propagation.inject(ctx))
    assert again["traceparent"] == PARENT.encode()
    assert again["baggage"] == b"aoetl.tenant=acme"
    assert propagation.extract(None) == context.Context() and propagation.inject(context.Context()) == []


# ------------------------------------------------------------------------------------ message spans
def handling(handler: Any) -> MessageHandling:
    config = LoopConfig(
        service="extract",
        stage=Stage.EXTRACT,
        instance_id="x1",
        group_id="g",
        input_types={"tasks": ExtractTask},
        retry=RetryPolicy(max_attempts=1),
    )
    return MessageHandling(config, handler, AvroSerde(), PartitionRetries(config.retry))


def task_record(value: bytes, headers: list[tuple[str, bytes]]) -> FakeRecord:
    return FakeRecord(
        42, value, "tasks", 3, key=b"r1", headers=headers, at_ms=1_700_000_000_000, leader_epoch=None
    )


def task() -> ExtractTask:
    return ExtractTask(run_id="r1", task_id="r1:0", split=Split(index=0, count=1, kind="whole"), spec=SPEC)


def traceparent_of(headers: list[tuple[str, Any]]) -> str:
    return dict(headers)["traceparent"].decode()


def test_a_message_span_continues_the_record_and_every_output_carries_it(finished: InMemorySpanExporter):
    def handler(value: Any, ctx: MessageContext) -> Iterator[Output]:
        with spans.child("extract batch", {"aoetl.batch_id": "r1:0:0"}):
            own = spans.current_headers()
        batch = DataBatch(
            run_id="r1",
            task_id="r1:0",
            batch_id="r1:0:0",
            seq=0,
            stage=Stage.EXTRACT,
            row_count=7,
            payload=b"",
            spec=SPEC,
        )
        yield Output("data", "r1:0:0", batch, own)
        yield Output(
            "events",
            "r1",
            RunEvent(run_id="r1", kind=EventKind.SPLIT_EXTRACTED, stage=Stage.EXTRACT, rows_out=7, batches=1),
        )

    work = handling(handler)
    record = task_record(AvroSerde().encode(task()), [("traceparent", PARENT.encode())])
    with spans.consuming("extract", "tasks", 3, 42, record.headers()) as span:
        outputs, _ = work.outputs_for(record, lazy=False, span=span)
        encoded = list(outputs)
    got = {s.name: s for s in finished.get_finished_spans()}
    message, batch = got["extract ExtractTask"], got["extract batch"]
    assert format(message.context.trace_id, "032x") == TRACE_ID
    assert format(message.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert batch.parent.span_id == message.context.span_id
    assert {k: message.attributes[k] for k in ("aoetl.run_id", "aoetl.task_id", "aoetl.split_index")} == {
        "aoetl.run_id": "r1",
        "aoetl.task_id": "r1:0",
        "aoetl.split_index": 0,
    }
    assert message.attributes["aoetl.pipeline"] == "orders"
    assert (message.attributes["aoetl.rows_out"], message.attributes["aoetl.batches"]) == (7, 1)
    assert message.attributes["messaging.kafka.offset"] == 42
    # the batch carries its own span, the event the message's; both carry the pipeline as baggage
    assert traceparent_of(encoded[0][3]) == f"00-{TRACE_ID}-{format(batch.context.span_id, '016x')}-01"
    assert traceparent_of(encoded[1][3]) == f"00-{TRACE_ID}-{format(message.context.span_id, '016x')}-01"
    assert dict(encoded[1][3])["baggage"] == b"aoetl.pipeline=orders"


def test_a_request_sets_the_tenant_its_outputs_carry(finished: InMemorySpanExporter):
    request = PipelineRequest(run_id="r2", spec=SPEC, tenant="acme", requested_by="me")
    seen: list[list[tuple[str, Any]]] = []
    with spans.consuming("orchestrate", "requests", 0, 1, [("baggage", b"aoetl.tenant=evil")]) as span:
        span.describe(request, "orchestrate")
        seen.append(spans.current_headers())
    baggage_header = dict(seen[0])["baggage"].decode()
    assert sorted(baggage_header.split(",")) == ["aoetl.pipeline=orders", "aoetl.tenant=acme"]
    (done,) = finished.get_finished_spans()
    assert done.attributes["aoetl.tenant"] == "acme" and done.name == "orchestrate PipelineRequest"


def test_a_failed_message_is_an_error_span_with_the_redacted_message_only(finished: InMemorySpanExporter):
    register_secret("s3cr3t-pass")
    try:

        def handler(value: Any, ctx: MessageContext) -> Iterator[Output]:
            raise ValueError("cannot connect to postgresql://u:s3cr3t-pass@db/x")

        record = task_record(AvroSerde().encode(task()), [])
        with spans.consuming("extract", "tasks", 3, 42, []) as span:
            outputs, _ = handling(handler).outputs_for(record, lazy=False, span=span)
        dead_letter = next(iter(outputs))
    finally:
        forget_all_secrets()
    (done,) = finished.get_finished_spans()
    assert done.status.status_code is StatusCode.ERROR
    everything = json.dumps([done.status.description, [dict(e.attributes or {}) for e in done.events]])
    assert "s3cr3t-pass" not in everything and "ValueError" in everything
    assert [e.name for e in done.events] == ["exception"]
    assert "exception.stacktrace" not in done.events[0].attributes
    assert dead_letter[0] == Topics.DEAD_LETTERS and traceparent_of(dead_letter[3]).startswith("00-")


# ------------------------------------------------------------------------------------------- tracing off
OFF = """
import json, sys
from shared.avro import AvroSerde
from shared.processing.handling import MessageHandling
from shared.tracing import spans
with spans.consuming("extract", "tasks", 0, 1, [("traceparent", b"{parent}")]) as span:
    passed_on = spans.current_headers()
print(json.dumps([dict((k, v.decode()) for k, v in passed_on), sorted(sys.modules)]))
"""


def test_tracing_off_imports_no_sdk_yet_passes_the_trace_on():
    done = subprocess.run(
        [sys.executable, "-c", OFF.replace("{parent}", PARENT)],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    headers, modules = json.loads(done.stdout)
    assert headers == {"traceparent": PARENT}  # a no-op span keeps its parent's context
    assert not [m for m in modules if m.startswith("opentelemetry.sdk")]


def test_the_timer_outputs_of_a_run_continue_its_last_message_and_old_runs_are_forgotten(
    finished: InMemorySpanExporter,
):
    runs = spans.RunContexts(limit=2)
    for run_id in ("r1", "r2", "r3"):
        with spans.consuming("orchestrate", "events", 0, 1, [("traceparent", PARENT.encode())]) as span:
            span.describe(RunEvent(run_id=run_id, kind=EventKind.RUN_PLANNED, stage=Stage.ORCHESTRATE), "x")
            runs.remember(span)
    last = finished.get_finished_spans()[-1]
    assert traceparent_of(runs.headers_for(task().model_copy(update={"run_id": "r3"}))) == (
        f"00-{TRACE_ID}-{format(last.context.span_id, '016x')}-01"
    )
    assert runs.headers_for(task()) == []  # r1: the oldest, forgotten
    assert runs.headers_for(SPEC) == []  # no run id at all


def test_baggage_alone_is_never_sent():
    ctx = propagation.with_run(context.Context(), "acme", "orders")
    assert propagation.inject(ctx) == []


def test_the_log_lines_of_a_traced_message_name_its_trace(finished: InMemorySpanExporter):
    with spans.consuming("load", "data", 0, 9, [("traceparent", PARENT.encode())]):
        inside = dict(current_context())
    assert inside["trace_id"] == TRACE_ID
    (done,) = finished.get_finished_spans()
    assert inside["span_id"] == format(done.context.span_id, "016x")
    assert "trace_id" not in current_context()
