"""The gateway with tracing on, in process: ``POST /runs`` and a webhook delivery are SERVER spans
continuing the caller's ``traceparent`` (and not its baggage), each request record is published inside
the gateway's PRODUCER span for it, and what the bus would write into the record's headers is that span's
context."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.trace import SpanKind

from services.gateway.app import create_app
from services.gateway.bus import RecordPosition
from shared.contracts import Contract, PipelineRequest
from shared.tracing import propagation
from tests.support.otel_memory import recording
from tests.unit.gateway_support import ADMIN, FakeBus, bearer, make_gateway
from tests.unit.test_gateway_app import PUSH, github

pytestmark = pytest.mark.unit

TRACE_ID, CALLER = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
SPEC = {
    "name": "traced-sync",
    "source": {"type": "event", "records_path": "commits"},
    "destination": {"type": "jsonl", "path": "/tmp/out.jsonl"},
}


class HeaderBus(FakeBus):
    """The fake bus, noting the trace headers ``KafkaBus.publish`` sends with each record."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[Contract | None, dict[str, bytes]]] = []

    async def publish(self, topic: str, key: str, value: Contract | None) -> RecordPosition:
        self.headers.append((value, {k: v for k, v in propagation.inject() if isinstance(v, bytes)}))
        return await super().publish(topic, key, value)


async def test_post_runs_continues_the_callers_trace_into_the_request_record(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")  # on; the spans go to this process's memory
    bus = HeaderBus()
    transport = httpx.ASGITransport(app=create_app(make_gateway(bus)))
    headers = {
        **bearer(ADMIN),
        "traceparent": f"00-{TRACE_ID}-{CALLER}-01",
        "baggage": "aoetl.tenant=someone-else",
    }
    with recording() as exporter:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            answer = await client.post("/runs", json={"spec": SPEC}, headers=headers)
    assert answer.status_code == 202, answer.text

    spans = {s.name: s for s in exporter.get_finished_spans()}
    http, produced = spans["POST /runs"], spans["gateway PipelineRequest"]
    assert http.kind is SpanKind.SERVER and format(http.parent.span_id, "016x") == CALLER
    assert format(http.context.trace_id, "032x") == TRACE_ID
    assert produced.kind is SpanKind.PRODUCER and produced.parent.span_id == http.context.span_id
    assert produced.attributes["aoetl.run_id"] == answer.json()["run_id"]
    assert produced.attributes["aoetl.pipeline"] == "traced-sync"
    assert produced.attributes["aoetl.tenant"] == ADMIN.record.tenant

    (request_headers,) = [h for value, h in bus.headers if isinstance(value, PipelineRequest)]
    span_id = format(produced.context.span_id, "016x")
    assert request_headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01".encode()
    # a caller's baggage is not taken: the record's is the run's own
    assert sorted(request_headers["baggage"].split(b",")) == [
        b"aoetl.pipeline=traced-sync",
        f"aoetl.tenant={ADMIN.record.tenant}".encode(),
    ]


async def test_a_webhook_continues_the_senders_trace_into_each_request(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    bus = HeaderBus()
    transport = httpx.ASGITransport(app=create_app(make_gateway(bus)))
    headers = {**github(PUSH), "traceparent": f"00-{TRACE_ID}-{CALLER}-01"}
    with recording() as exporter:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            answer = await client.post("/webhooks/github", content=PUSH, headers=headers)
    assert answer.status_code == 202, answer.text

    finished = exporter.get_finished_spans()
    (http,) = [s for s in finished if s.name == "POST /webhooks/{source}"]
    assert format(http.parent.span_id, "016x") == CALLER
    produced = {s.attributes["aoetl.run_id"]: s for s in finished if s.name == "gateway PipelineRequest"}
    requests = [(value, h) for value, h in bus.headers if isinstance(value, PipelineRequest)]
    assert len(requests) == len(answer.json()["runs"]) == len(produced) == 2  # one per matching definition
    for request, sent in requests:
        span = produced[request.run_id]
        assert span.parent.span_id == http.context.span_id
        assert sent["traceparent"] == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01".encode()
