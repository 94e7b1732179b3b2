"""OpenTelemetry tracing across every hop of a run: gateway or CLI -> orchestrator -> extract -> transform ->
load -> result, as one trace.

What is guaranteed:

* **Off by default, and then nearly free.** Tracing is on only when the standard variables say where to
  send spans (``OTEL_TRACES_EXPORTER`` other than ``none``, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and ``OTEL_SDK_DISABLED`` is not ``true`` (``setup``). Off, no
  SDK is imported and the API's no-op tracer is used: a message costs a header scan and a few context
  switches (``bench/bench_tracing.py`` measures it). The CLI does not even import the API when it is off.
* **One trace per run.** A W3C ``traceparent`` (and ``tracestate``) travels in the Kafka headers of every
  record a run causes (``propagation``): the task loop (``shared.processing``) continues the trace of the
  record it consumes and writes the handling span's context into every record it produces, in the same
  transaction; the gateway continues an incoming HTTP ``traceparent`` (``POST /runs``, webhooks); the
  CLI starts the trace (or continues ``TRACEPARENT`` of its environment); a topic trigger continues the
  ``traceparent`` header of the event that started the run (``services.orchestrator.topic_triggers``).
  A service with tracing off still passes the context on, so one untraced replica does not cut a trace
  in two.
* **What a span says** (``spans``): one span per consumed message (so per stage, per task and per batch),
  named ``<stage> <contract>``, with the run id, pipeline, tenant, stage, task/split/batch ids and row
  counts as ``aoetl.*`` attributes and the Kafka coordinates as ``messaging.*``. The tenant and pipeline
  travel as W3C baggage (tasks and batches do not carry the tenant), set from the request itself by
  whoever writes it and again by the orchestrator; a caller's baggage (HTTP, a foreign header) is
  dropped.
* **No secrets.** An error on a span carries its type and the ``shared.redaction.redact``-ed message,
  never a traceback or the raw text; attributes are ids, names and counts only, never data values.

Configuration is the standard ``OTEL_*`` environment (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_EXPORTER_OTLP_HEADERS``...), read by the SDK itself.
"""
