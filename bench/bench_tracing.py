"""What tracing costs the task loop per consumed message: the hooks ``shared.processing`` runs for every
record (the message span, its description from the decoded contract, the headers of two outputs), timed
in a loop of ``--messages`` iterations, in a fresh interpreter per mode:

* ``bare``: the loop with no tracing call at all, the floor the others are read against;
* ``off``: no ``OTEL_*`` variable (the default): the API's no-op tracer, record without trace headers;
* ``off-passing``: the same, the record carrying a ``traceparent`` (passed on to the outputs);
* ``on``: the SDK with a batch processor and an exporter that drops everything (the cost of recording,
  not of a collector's network).

A micro-benchmark, not a test: figures depend on the machine. Output is one JSON object (microseconds per
message, median of ``--repeat`` rounds), also written to bench/results/bench_tracing.json.

    .venv/bin/python bench/bench_tracing.py [--messages 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def measure(mode: str, messages: int, repeat: int) -> float:
    """Microseconds per message in this process (``mode`` decides what the environment set up)."""
    from shared.contracts import DataBatch, Stage
    from shared.spec import parse_spec
    from shared.tracing import spans

    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Dropping(SpanExporter):
            def export(self, spans: object) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropping()))
        trace.set_tracer_provider(provider)
    spec = parse_spec(
        {
            "name": "orders",
            "source": {"type": "csv", "path": "/in/*.csv"},
            "destination": {"type": "duckdb", "path": "/out.duckdb", "table": "t"},
        }
    )
    batch = DataBatch(
        run_id="r",
        task_id="r:0",
        batch_id="r:0:0",
        seq=0,
        stage=Stage.EXTRACT,
        row_count=1,
        payload=b"",
        spec=spec,
    )
    headers = [("traceparent", PARENT)] if mode in ("off-passing", "on") else []
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        if mode == "bare":
            for offset in range(messages):
                with contextlib.nullcontext(offset):
                    batch.run_id  # noqa: B018 (what describe reads first)
            rounds.append((time.perf_counter() - started) / messages * 1e6)
            continue
        for offset in range(messages):
            with spans.consuming("transform", "aoetl.data.extracted", 0, offset, headers) as span:
                span.describe(batch, "transform")
                spans.current_headers()
                span.produced(batch)
                spans.current_headers()
        rounds.append((time.perf_counter() - started) / messages * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # the child process's
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.messages, args.repeat)))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    figures = {}
    for mode in ("bare", "off", "off-passing", "on"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--messages",
                str(args.messages),
                "--repeat",
                str(args.repeat),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        figures[mode] = round(json.loads(done.stdout), 2)
    out = {"us_per_message": figures, "messages": args.messages, "repeat": args.repeat}
    text = json.dumps(out, indent=2)
    print(text)
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench_tracing.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
