"""The spans aoetl makes, and what they say: one per consumed message (``consuming``), one per produced
batch where a handler makes many of one message (``child``), one per submission (``producing``).

Attributes are read off the contracts by field name (``describe``), so every stage and every contract
gets the same ones without a per-service mapping: ``aoetl.run_id``, ``aoetl.pipeline``, ``aoetl.tenant``,
``aoetl.stage``, ``aoetl.task_id``, ``aoetl.split_index``, ``aoetl.batch_id``, ``aoetl.batch.rows``, and
from the stage's own report among its outputs (``SPLIT_EXTRACTED``, ``BATCH_TRANSFORMED``,
``BATCH_LOADED``) ``aoetl.rows_in`` / ``aoetl.rows_out`` / ``aoetl.rows_rejected`` / ``aoetl.batches``;
a result adds ``aoetl.result.status``. Only ids, names, kinds and counts: never a data value.

While a message is handled, its log lines carry ``trace_id`` and ``span_id`` (when the span records).

An error is recorded as the span's status plus an ``exception`` event with the type and the redacted
message (``shared.redaction.redact``), never the traceback: its frames quote the raw message.

The tracer is the API's proxy: a no-op until ``shared.tracing.setup.configure`` installs the SDK, which it
then follows. A no-op span still carries the context it was started in, so a service with tracing off
passes its input's trace on to its outputs.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.kafka.types import Headers
from shared.logging import log_context
from shared.redaction import redact
from shared.tracing import propagation

_TRACER = trace.get_tracer("aoetl")
MAX_ERROR_CHARS = 1000
# The stage reports whose counts are the stage's own (rows in, out, rejected) for the message handled.
_REPORTS = frozenset({"SPLIT_EXTRACTED", "BATCH_TRANSFORMED", "BATCH_LOADED"})

Attributes = dict[str, str | int | bool]


def describe(value: object) -> Attributes:
    """The ``aoetl.*`` attributes of a contract (see the module docstring); absent fields are left out."""
    found: Attributes = {}
    spec = getattr(value, "spec", None)
    pipeline = getattr(spec, "name", None) or getattr(value, "definition_name", None)
    pipeline = pipeline or getattr(value, "pipeline", None)
    split = getattr(value, "split", None)
    for name, item in (
        ("aoetl.run_id", getattr(value, "run_id", None)),
        ("aoetl.pipeline", pipeline),
        ("aoetl.tenant", getattr(value, "tenant", None)),
        ("aoetl.task_id", getattr(value, "task_id", None)),
        ("aoetl.split_index", getattr(split, "index", None)),
        ("aoetl.batch_id", getattr(value, "batch_id", None)),
        ("aoetl.batch.rows", getattr(value, "row_count", None)),
        ("aoetl.event", _text(getattr(value, "kind", None))),
        ("aoetl.action", _text(getattr(value, "action", None))),
    ):
        if item is not None and item != "":
            found[name] = item if isinstance(item, int | str) else str(item)
    return found


def outcome(value: object) -> Attributes:
    """What an output says about the handling it came from: the stage report's counts, a result's status."""
    kind = _text(getattr(value, "kind", None))
    if kind in _REPORTS:
        return {
            "aoetl.rows_in": int(getattr(value, "rows_in", 0)),
            "aoetl.rows_out": int(getattr(value, "rows_out", 0)),
            "aoetl.rows_rejected": int(getattr(value, "rows_rejected", 0)),
            "aoetl.batches": int(getattr(value, "batches", 0)),
        }
    status = getattr(value, "status", None)
    if status is not None and hasattr(value, "stages"):
        return {"aoetl.result.status": str(_text(status))}
    return {}


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed with ``exc``'s type and redacted message (a retry names its cause)."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, BaseException) else exc
    message = redact(str(error))[:MAX_ERROR_CHARS]
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))
    span.add_event("exception", {"exception.type": type(error).__name__, "exception.message": message})


class MessageSpan:
    """The span of one consumed message, current on this thread while the message is handled."""

    def __init__(self, span: Span, parent: context.Context):
        self.span = span
        self.run_id: str | None = None
        self.context = trace.set_span_in_context(span, parent)  # with the run's baggage, once described
        self._tokens: list[object] = []
        self._enter(self.context)

    def _enter(self, ctx: context.Context) -> None:
        self.context = ctx
        self._tokens.append(context.attach(ctx))

    def describe(self, value: object, stage: str) -> None:
        """Name the span after the decoded message and set its attributes; a message that names its
        tenant or pipeline (a request, a task) makes them the baggage of everything it causes. A span
        that records nothing (tracing off here) only passes its parent's context on."""
        run_id = getattr(value, "run_id", None)
        self.run_id = str(run_id) if run_id else None
        if not self.span.is_recording():
            return
        own = describe(value)
        found = dict(own)
        tenant = own.get("aoetl.tenant") or baggage.get_baggage(propagation.TENANT)
        pipeline = own.get("aoetl.pipeline") or baggage.get_baggage(propagation.PIPELINE)
        if tenant:
            found["aoetl.tenant"] = str(tenant)
        if pipeline:
            found["aoetl.pipeline"] = str(pipeline)
        self.span.update_name(f"{stage} {type(value).__name__}")
        self.span.set_attributes(found)
        if "aoetl.tenant" in own or "aoetl.pipeline" in own:
            self._enter(propagation.with_run(context.get_current(), str(tenant or ""), str(pipeline or "")))

    def produced(self, value: object) -> None:
        if not self.span.is_recording():
            return
        found = outcome(value)
        if found:
            self.span.set_attributes(found)

    def failed(self, exc: BaseException) -> None:
        if self.span.is_recording():
            record_error(self.span, exc)

    def close(self) -> None:
        for token in reversed(self._tokens):
            context.detach(token)  # type: ignore[arg-type]
        self._tokens.clear()
        self.span.end()


class RunContexts:
    """The context of the last message handled per run id (the most recent ``limit`` runs), for what a
    service produces about a run outside of any message (the orchestrator's timer: a retried task, a
    timeout), so that it stays in the run's trace."""

    def __init__(self, limit: int = 10_000):
        self._limit = limit
        self._by_run: OrderedDict[str, context.Context] = OrderedDict()

    def remember(self, message: MessageSpan) -> None:
        if message.run_id is None:
            return
        self._by_run[message.run_id] = message.context
        self._by_run.move_to_end(message.run_id)
        while len(self._by_run) > self._limit:
            self._by_run.popitem(last=False)

    def headers_for(self, value: object) -> Headers:
        """The headers of an output about ``value``'s run: [] for a run not seen (or no run)."""
        ctx = self._by_run.get(str(getattr(value, "run_id", "")))
        return propagation.inject(ctx) if ctx is not None else []


class _IdleSpan(MessageSpan):
    """The message span of a message with no trace, in a process with tracing off: does nothing."""

    def __init__(self) -> None:
        self.span, self.run_id, self.context = trace.INVALID_SPAN, None, context.Context()

    def describe(self, value: object, stage: str) -> None:
        """Nothing to say: the run is not traced here."""

    def close(self) -> None:
        """Nothing was attached."""


_IDLE = _IdleSpan()
_NO_SDK = trace.ProxyTracerProvider


@contextlib.contextmanager
def consuming(
    stage: str, topic: str, partition: int, offset: int, headers: Headers | None
) -> Iterator[MessageSpan]:
    """A CONSUMER span continuing the trace of a record's headers; exceptions raised inside are recorded
    (redacted) and re-raised. With tracing off and no trace to pass on, nothing at all (the default path
    of every message costs one look at its headers)."""
    if not propagation.carries_trace(headers) and isinstance(trace.get_tracer_provider(), _NO_SDK):
        yield _IDLE
        return
    parent = propagation.extract(headers)
    span = _TRACER.start_span(
        f"{stage} {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "aoetl.stage": stage,
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
        },
        record_exception=False,  # its text and traceback are unredacted: record_error instead
        set_status_on_exception=False,
    )
    message = MessageSpan(span, parent)
    # log lines of the message name its trace, so a trace's logs can be found (and a log line's trace)
    ids = span.get_span_context()
    logged = {"trace_id": format(ids.trace_id, "032x"), "span_id": format(ids.span_id, "016x")}
    try:
        with log_context(**(logged if span.is_recording() else {})):
            yield message
    except BaseException as exc:
        message.failed(exc)
        raise
    finally:
        message.close()


@contextlib.contextmanager
def child(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """An INTERNAL span under the current one (a batch among a task's), current inside the block."""
    with _TRACER.start_as_current_span(
        name, attributes=dict(attributes or {}), record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc)
            raise


@contextlib.contextmanager
def producing(
    name: str,
    value: object,
    *,
    stage: str,
    topic: str,
    parent: context.Context | None = None,
) -> Iterator[Headers]:
    """A PRODUCER span for a record that starts or continues a run (a submission) to ``topic``, under
    ``parent`` (default: the current context); yields the headers that carry it. The baggage is the
    record's own tenant and pipeline, whatever the caller's context held."""
    start = parent if parent is not None else context.get_current()
    if _nothing_to_trace(start):
        # the span would be a no-op one without a context and its headers empty: spare the attributes, the
        # baggage and the span (a gateway with tracing off makes one per webhook delivery)
        yield []
        return
    own = describe(value)
    attributes = {
        **own,
        "aoetl.stage": stage,
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
    }
    tenant, pipeline = own.get("aoetl.tenant"), own.get("aoetl.pipeline")
    token = context.attach(propagation.with_run(baggage.clear(start), str(tenant or ""), str(pipeline or "")))
    try:
        with _TRACER.start_as_current_span(
            name,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield propagation.inject()
            except BaseException as exc:
                record_error(span, exc)
                raise
    finally:
        context.detach(token)


def _nothing_to_trace(start: context.Context) -> bool:
    """No SDK is installed (the API's no-op or proxy provider) and ``start`` holds no span to continue."""
    provider = trace.get_tracer_provider()
    no_sdk = isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return no_sdk and not trace.get_current_span(start).get_span_context().is_valid


def current_headers() -> Headers:
    """The headers that carry the current context (with its baggage)."""
    return propagation.inject()


def _text(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))
