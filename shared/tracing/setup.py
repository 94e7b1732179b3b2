"""Whether tracing is on, and turning it on: the standard ``OTEL_*`` variables decide, read once per process.

Tracing is on when an exporter is named (``OTEL_TRACES_EXPORTER``, a comma-separated list, anything but
``none``) or, with no exporter named, when an OTLP endpoint is given (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: then ``otlp``), and ``OTEL_SDK_DISABLED`` is not ``true``. The
specification's default exporter is ``otlp``; ours is none, so a process nobody configured never tries to
reach a collector on localhost:4318.

``enabled`` reads only the environment (no OpenTelemetry import), so the CLI can ask it at no cost.
``configure`` imports the SDK only when tracing is on, installs a ``TracerProvider`` (its sampler, batch
processor and exporters read their own ``OTEL_*`` variables) and registers its shutdown at exit, which
flushes the spans still queued. ``otlp`` is OTLP over HTTP with protobuf (``opentelemetry-exporter-otlp-
proto-http``; the gRPC exporter is not a dependency); any other name is looked up as the SDK does, among
the ``opentelemetry_traces_exporter`` entry points (``console`` is the SDK's).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

_log = logging.getLogger(__name__)

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# the entry point of the exporter a name stands for, where it is not the name itself
_EXPORTER_ENTRY_POINTS = {"otlp": "otlp_proto_http"}

_lock = threading.Lock()
_configured_for: str | None = None


def exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The exporters the environment asks for ([] = tracing off)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if named:
        names = [n.strip().lower() for n in named.split(",") if n.strip()]
        return [] if "none" in names else names
    return ["otlp"] if any(env.get(name, "").strip() for name in _ENDPOINTS) else []


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    return bool(exporter_names(environ))


def configure(service: str, instance: str | None = None) -> bool:
    """Install the SDK for this process when tracing is on (True); a second call is a no-op. ``service``
    is the ``service.name`` unless ``OTEL_SERVICE_NAME`` (or ``OTEL_RESOURCE_ATTRIBUTES``) names one.
    Raises ``ConfigurationError`` for an exporter that is not installed."""
    global _configured_for
    names = exporter_names()
    if not names:
        return False
    with _lock:
        if _configured_for is not None:
            return True
        exporters = [_exporter(name) for name in names]
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes: dict[str, str] = {}
        if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes[SERVICE_NAME] = service
        if instance:
            attributes[SERVICE_INSTANCE_ID] = instance
        provider = TracerProvider(resource=Resource.create(attributes))
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        # What HTTP ingress (the gateway's instrumentation) takes from a caller: the trace context only.
        # Baggage is ours (tenant, pipeline; shared.tracing.propagation), never a caller's claim.
        propagate.set_global_textmap(TraceContextTextMapPropagator())
        _configured_for = service
        _log.info("tracing on: %s spans of %s", ", ".join(names), service)
        return True


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        protocol = next((os.environ[p] for p in _PROTOCOLS if os.environ.get(p)), "http/protobuf")
        if protocol.strip().lower() != "http/protobuf":
            raise ConfigurationError(
                f"OTLP protocol {protocol!r} is not available: aoetl exports OTLP over http/protobuf"
            )
    from importlib.metadata import entry_points

    found = entry_points(group="opentelemetry_traces_exporter", name=_EXPORTER_ENTRY_POINTS.get(name, name))
    if not found:
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed")
    try:
        exporter: SpanExporter = next(iter(found)).load()()
        return exporter
    except Exception as exc:  # an exporter refusing its own OTEL_* settings
        raise ConfigurationError(f"trace exporter {name!r} could not be created: {exc}") from exc
