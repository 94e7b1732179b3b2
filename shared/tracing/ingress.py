"""Where a run's trace starts: an HTTP request to the gateway, or a record the CLI writes.

* ``instrument_app``: the gateway's FastAPI app gets OpenTelemetry's own ASGI instrumentation
  (``opentelemetry-instrumentation-fastapi``) when tracing is on: a SERVER span per request, continuing
  the caller's ``traceparent``/``tracestate`` (only those: ``shared.tracing.setup`` sets the HTTP
  propagator to the trace context alone). Probes (``/health``, ``/ready``, ``/metrics``) are not traced:
  they would bury the runs under scrapes. Off, the app is left exactly as it was.
* ``cli_produce``: the CLI's records (a submission, a stop) are produced inside a PRODUCER span, whose
  context the record's headers carry; the span continues ``TRACEPARENT``/``TRACESTATE`` of the
  environment when given (the OpenTelemetry convention for a process started by a traced one, e.g. a CI
  job). Off, nothing of OpenTelemetry is even imported (the CLI's start-up time is measured).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from shared.kafka.types import Headers
from shared.tracing import setup

_NOT_TRACED_URLS = "/health,/ready,/metrics"


def instrument_app(app: Any) -> bool:
    """Trace the requests of ``app`` when tracing is on (True)."""
    if not setup.enabled():
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # the ASGI send/receive sub-spans of every request add nothing a run's trace needs
    FastAPIInstrumentor.instrument_app(app, excluded_urls=_NOT_TRACED_URLS, exclude_spans=["receive", "send"])
    return True


@contextlib.contextmanager
def cli_produce(value: object, topic: str) -> Iterator[Headers | None]:
    """The headers the CLI's record about ``value`` carries: None when tracing is off."""
    if not setup.enabled():
        yield None
        return
    setup.configure("aoetl-cli")
    from shared.tracing import propagation, spans

    carrier = {k: os.environ[k.upper()] for k in ("traceparent", "tracestate") if os.environ.get(k.upper())}
    parent = propagation.from_mapping(carrier) if carrier else None
    name = f"aoetl {type(value).__name__}"
    with spans.producing(name, value, stage="cli", topic=topic, parent=parent) as headers:
        yield headers
