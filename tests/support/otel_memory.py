"""The spans this test process makes, in memory, while a test asks for them: one SDK tracer provider per
process (OpenTelemetry lets a process set its global provider once) whose sampler records only inside
``recording()``. Outside of it nothing is kept, so the tests that run later in the same session (the
in-process services of the integration tests) neither fill the memory nor see tracing on."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes


class _Switch(Sampler):
    def __init__(self) -> None:
        self.on = threading.Event()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        chosen = ALWAYS_ON if self.on.is_set() else ALWAYS_OFF
        return chosen.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "test switch"


@functools.cache
def _installed() -> tuple[_Switch, InMemorySpanExporter]:
    switch, memory = _Switch(), InMemorySpanExporter()
    provider = TracerProvider(sampler=switch)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    return switch, memory


@contextlib.contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """Record every span started inside the block; the exporter holds those only."""
    switch, memory = _installed()
    memory.clear()
    switch.on.set()
    try:
        yield memory
    finally:
        switch.on.clear()
