"""The trace context in Kafka headers: W3C ``traceparent`` / ``tracestate`` plus our baggage (``baggage``
header: the run's tenant and pipeline), written and read with OpenTelemetry's own propagators.

The getter and setter below are the only hand-written part: OpenTelemetry has no Kafka carrier in its API
(the contrib instrumentations patch the client classes, which would bypass the transaction engine that
builds every producer), and a Kafka record's headers are a list of ``(name, bytes)`` pairs rather than the
mapping the API's default carrier expects. Names are matched case-insensitively, as the propagators' HTTP
carriers do; a header may repeat, and the first wins.

Only the baggage entries named in ``BAGGAGE_KEYS`` travel: anything else a writer put there is dropped
on reading, so a record's headers cannot grow hop after hop or carry a caller's text through the system.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.kafka.types import Headers

TENANT = "aoetl.tenant"
PIPELINE = "aoetl.pipeline"
BAGGAGE_KEYS = (TENANT, PIPELINE)
# The header names these propagators write (and nothing else of a record's headers is ours).
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")

_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


class KafkaHeaderGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        wanted = key.lower()
        for name, value in carrier:
            if name.lower() == wanted and value is not None:
                return [value.decode("utf-8", "replace") if isinstance(value, bytes) else value]
        return None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier]


class KafkaHeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode()))


_GETTER, _SETTER = KafkaHeaderGetter(), KafkaHeaderSetter()


def extract(headers: Headers | None) -> context.Context:
    """The context a record's headers carry (an empty one when they carry none), with only our baggage."""
    if not headers:
        return context.Context()
    found = _PROPAGATOR.extract(headers, context=context.Context(), getter=_GETTER)
    ours = {k: v for k, v in baggage.get_all(found).items() if k in BAGGAGE_KEYS}
    if len(ours) != len(baggage.get_all(found)):
        found = baggage.clear(found)
        for key, value in ours.items():
            found = baggage.set_baggage(key, value, context=found)
    return found


def carries_trace(headers: Headers | None) -> bool:
    return bool(headers) and any(name.lower() == "traceparent" for name, _ in headers or ())


def inject(ctx: context.Context | None = None) -> Headers:
    """Headers carrying ``ctx`` (default: the current context); [] when there is no trace to continue
    (baggage alone is not sent: it only describes a trace)."""
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return []
    headers: Headers = []
    _PROPAGATOR.inject(headers, context=ctx, setter=_SETTER)
    return headers


def with_run(ctx: context.Context, tenant: str | None, pipeline: str | None) -> context.Context:
    """``ctx`` with the run's tenant and pipeline as baggage (a value given replaces what was there)."""
    for key, value in ((TENANT, tenant), (PIPELINE, pipeline)):
        if value:
            ctx = baggage.set_baggage(key, value, context=ctx)
    return ctx


def from_mapping(carrier: Mapping[str, str]) -> context.Context:
    """The context of a mapping carrier (HTTP headers; ``TRACEPARENT`` of a process environment, read by
    the CLI): trace context only, no baggage."""
    return TraceContextTextMapPropagator().extract({k.lower(): v for k, v in carrier.items()})
