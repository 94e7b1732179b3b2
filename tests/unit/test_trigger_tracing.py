"""Issue 12: a run started by a topic trigger continues the W3C trace of the event that started it. The
trigger's reader keeps the trace headers of a window's first traced event, and the request it makes
carries a PRODUCER span under that context: a child of the producer's span when tracing is on here, the
producer's context passed on unchanged when it is off. A window of untraced events starts a trace of its
own. Without a broker: the reader's consume step on fake records, the spans in memory."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.orchestrator.topic_triggers import RuleKey, RunnerConfig, TriggerRunner
from shared.avro import AvroSerde
from shared.contracts import PipelineRequest
from shared.kafka.types import Headers
from shared.settings import KafkaSettings
from shared.triggers import TopicTrigger
from tests.support.otel_memory import recording
from tests.unit.kafka_fakes import FakeRecord

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PRODUCER_SPAN}-01"
SERDE = AvroSerde()


def event(offset: int, body: dict[str, object], headers: Headers | None = None) -> FakeRecord:
    """A consumed record of the trigger topic."""
    return FakeRecord(offset, json.dumps(body).encode(), "orders", key=None, headers=headers)


@pytest.fixture
def finished() -> Iterator[InMemorySpanExporter]:
    with recording() as exporter:
        yield exporter


def runner() -> TriggerRunner:
    config = RunnerConfig(
        KafkaSettings(), "orch-1", "-t", session_timeout_ms=10_000, transaction_timeout_ms=10_000
    )
    rule = TopicTrigger(topic="orders", window={"events": 3})  # type: ignore[arg-type]
    return TriggerRunner(RuleKey("orders-pipeline", 0, "acme"), rule, config, SERDE)


def request_of(*events: FakeRecord) -> tuple[PipelineRequest, dict[str, str]]:
    """The one request the trigger makes of ``events`` (one window), and its trace headers."""
    reader = runner()
    for event in events:
        reader._take(event)  # type: ignore[arg-type]
    reader.windows.close_all()
    ((topic, key, value, *headers),) = reader.outputs(reader.windows.closed, None)  # type: ignore[arg-type]
    assert topic == "aoetl.requests-t"
    request = SERDE.decode(value, PipelineRequest)
    assert key == request.run_id
    carried = headers[0] if headers else []
    return request, {name: (v.decode() if isinstance(v, bytes) else str(v)) for name, v in carried}


def test_the_run_continues_the_trace_of_the_event_that_started_it(finished: InMemorySpanExporter) -> None:
    untraced, traced = event(4, {"id": 1}), event(5, {"id": 2}, [("traceparent", PARENT.encode())])
    request, headers = request_of(untraced, traced, event(6, {"id": 3}, [("traceparent", b"00-x")]))
    assert request.requested_by == "trigger:orders" and request.tenant == "acme"
    (span,) = [s for s in finished.get_finished_spans() if s.name == "orchestrate topic trigger"]
    assert span.kind is SpanKind.PRODUCER
    assert span.parent is not None and format(span.parent.span_id, "016x") == PRODUCER_SPAN
    assert format(span.context.trace_id, "032x") == TRACE_ID  # the producer's trace
    assert span.attributes is not None and span.attributes["aoetl.run_id"] == request.run_id
    # the request carries the span's context: the orchestrator's spans of the run are its children
    assert headers["traceparent"] == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"
    assert "aoetl.tenant=acme" in headers["baggage"]


def test_a_window_without_a_traced_event_starts_a_trace_of_its_own(finished: InMemorySpanExporter) -> None:
    _, headers = request_of(event(1, {"id": 1}), event(2, {"id": 2}), event(3, {"id": 3}))
    (span,) = [s for s in finished.get_finished_spans() if s.name == "orchestrate topic trigger"]
    assert span.parent is None and TRACE_ID not in headers["traceparent"]


def test_with_tracing_off_the_producers_context_is_passed_on() -> None:
    _, headers = request_of(event(1, {"id": 1}, [("traceparent", PARENT.encode())]))
    assert headers["traceparent"].split("-")[1] == TRACE_ID  # no span here: the trace goes on unbroken
