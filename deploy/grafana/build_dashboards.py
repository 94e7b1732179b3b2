"""The Grafana dashboards of aoetl, built from code: ``python -m deploy.grafana.build_dashboards`` (``make
dashboards``) writes ``deploy/grafana/dashboards/*.json``; ``--check`` fails when the committed files
differ from what this module builds (tests/unit/test_grafana_dashboards.py checks the same, and that every
query names only metrics the services export).

Three dashboards, linked to each other by their ``aoetl`` tag:

* overview: runs by status, failures, data age, stuck runs, rows, dead letters, lag, the gateway;
* pipeline (``$pipeline``): its runs, run duration, data age, rows per stage, continuous-pipeline lag;
* service (``$job``, ``$instance``): what one service consumes and produces, its errors, batch time,
  transactions, partitions, CPU and memory.

The service is the scrape target's ``job`` (``aoetl-<service>`` in deploy/prometheus/prometheus.yml), per
replica its ``instance``; per-pipeline figures come from the monitor (summed over its replicas).

Written as plain data rather than with a dashboard SDK: a dashboard is a JSON document of a few dozen
panels, and an SDK's models would tie this module to one Grafana release's schema for no check that the
tests do not make here (the queries are what matters, and they are checked against the exported metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
WIDTH = 24  # Grafana's grid


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: Sequence[Query]
    description: str = ""
    unit: str = "short"
    kind: str = "timeseries"  # or "stat", "table"
    width: int = 12
    height: int = 8


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[str, list[Panel]]] = field(default_factory=list)

    def row(self, title: str, *panels: Panel) -> Dashboard:
        self.rows.append((title, list(panels)))
        return self

    def to_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        y = 0
        for title, row_panels in self.rows:
            panels.append(
                {
                    "type": "row",
                    "title": title,
                    "id": len(panels) + 1,
                    "collapsed": False,
                    "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
                    "panels": [],
                }
            )
            y, x, line_height = y + 1, 0, 0
            for panel in row_panels:
                if x + panel.width > WIDTH:  # wrap to the next line of the grid
                    y, x, line_height = y + line_height, 0, 0
                panels.append(_panel_json(panel, len(panels) + 1, x, y))
                x, line_height = x + panel.width, max(line_height, panel.height)
            y += line_height
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["aoetl"],
            "editable": True,
            "graphTooltip": 1,  # a shared crosshair
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "timezone": "browser",
            "links": [
                {
                    "type": "dashboards",
                    "tags": ["aoetl"],
                    "title": "aoetl",
                    "asDropdown": True,
                    "keepTime": True,
                }
            ],
            "annotations": {"list": []},
            "templating": {"list": [_datasource_variable(), *self.variables]},
            "panels": panels,
        }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "id": panel_id,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": panel.kind == "timeseries",
                "instant": panel.kind != "timeseries",
                **({"format": "table"} if panel.kind == "table" else {}),
            }
            for index, query in enumerate(panel.queries)
        ],
    }
    if panel.kind == "stat":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    if panel.kind == "table":
        body["transformations"] = [{"id": "merge", "options": {}}]
    return body


def _datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}


def query_variable(name: str, label: str, query: str, *, multi: bool = False) -> dict[str, Any]:
    """A variable whose values are ``label_values(...)`` of a metric the services export."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change: pipelines and replicas come and go
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        **({"allValue": ".+"} if multi else {}),
    }


def ts(title: str, *queries: Query, unit: str = "short", description: str = "", width: int = 12) -> Panel:
    return Panel(title, queries, description=description, unit=unit, width=width)


def stat(title: str, *queries: Query, unit: str = "short", description: str = "", width: int = 6) -> Panel:
    return Panel(title, queries, description=description, unit=unit, kind="stat", width=width, height=5)


def quantile(q: float, bucket: str, selector: str = "", by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({bucket}{selector}[{RATE}])))"


def p95(bucket: str, selector: str = "", by: str = "") -> str:
    return quantile(0.95, bucket, selector, by)


FAILED = 'status=~"FAILED|TIMED_OUT"'


def overview() -> Dashboard:
    return (
        Dashboard(
            "aoetl-overview",
            "aoetl / Overview",
            "Every pipeline and service at a glance: runs, freshness, rows, dead letters, lag, the gateway.",
        )
        .row(
            "Runs",
            stat(
                "Runs finished (range)",
                Query("sum by (status) (increase(aoetl_runs_finished_total[$__range]))", "{{status}}"),
                width=8,
            ),
            stat("Runs active", Query('sum(aoetl_monitor_runs_tracked{state="active"})', "active"), width=4),
            stat("Runs stuck", Query("sum(aoetl_runs_stuck)", "stuck"), width=4),
            stat("Services up", Query('sum(up{job=~"aoetl-.+"})', "up"), width=4),
            stat(
                "Alerts (range)",
                Query("sum(increase(aoetl_alerts_total[$__range]))", "alerts"),
                width=4,
            ),
            ts(
                "Runs finished per minute, by status",
                Query(f"sum by (status) (rate(aoetl_runs_finished_total[{RATE}])) * 60", "{{status}}"),
            ),
            ts(
                "Failed and timed-out runs, by pipeline",
                Query(
                    f"sum by (pipeline) (increase(aoetl_runs_finished_total{{{FAILED}}}[{RATE}]))",
                    "{{pipeline}}",
                ),
            ),
            Panel(
                "Data age by pipeline (since its latest successful run)",
                [
                    Query(
                        "time() - max by (pipeline) (aoetl_pipeline_last_success_timestamp_seconds)",
                        "{{pipeline}}",
                    )
                ],
                unit="s",
                kind="table",
                description="The freshness alert (AoetlPipelineStale) fires past one day.",
            ),
            ts(
                "Run duration p95, by pipeline",
                Query(p95("aoetl_run_duration_seconds_bucket", "", "pipeline"), "{{pipeline}}"),
                unit="s",
            ),
        )
        .row(
            "Data",
            ts(
                "Rows per second, by stage (out)",
                Query(f'sum by (stage) (rate(aoetl_rows_total{{direction="out"}}[{RATE}]))', "{{stage}}"),
                unit="rowsps",
            ),
            ts(
                "Rejected rows per second, by pipeline",
                Query(
                    f'sum by (pipeline) (rate(aoetl_rows_total{{direction="rejected"}}[{RATE}]))',
                    "{{pipeline}}",
                ),
                unit="rowsps",
            ),
            ts(
                "Dead letters, by stage and error class",
                Query(
                    f"sum by (stage, error_class) (increase(aoetl_dead_letters_total[{RATE}]))",
                    "{{stage}} {{error_class}}",
                ),
            ),
            ts(
                "Consumer lag, by group",
                Query("sum by (group) (max by (group, topic) (aoetl_consumer_lag))", "{{group}}"),
                description="Messages not committed yet (high watermark - committed offset), all topics.",
            ),
        )
        .row(
            "Gateway",
            ts(
                "HTTP requests per second, by status class",
                Query(
                    f"sum by (status_class) (rate(aoetl_gateway_http_requests_total[{RATE}]))",
                    "{{status_class}}",
                ),
                unit="reqps",
                width=8,
            ),
            ts(
                "HTTP latency p95, by route",
                Query(p95("aoetl_gateway_http_request_duration_seconds_bucket", "", "route"), "{{route}}"),
                unit="s",
                width=8,
            ),
            ts(
                "Webhook deliveries per second, by outcome",
                Query(f"sum by (outcome) (rate(aoetl_gateway_webhooks_total[{RATE}]))", "{{outcome}}"),
                unit="reqps",
                width=8,
            ),
        )
    )


def pipeline() -> Dashboard:
    sel = 'pipeline="$pipeline"'
    return (
        Dashboard(
            "aoetl-pipeline",
            "aoetl / Pipeline",
            "One pipeline: its runs, their duration, its data's age, rows per stage, a continuous run's lag.",
            [query_variable("pipeline", "Pipeline", "label_values(aoetl_runs_finished_total, pipeline)")],
        )
        .row(
            "Runs",
            stat(
                "Data age",
                Query(f"time() - max(aoetl_pipeline_last_success_timestamp_seconds{{{sel}}})", "age"),
                unit="s",
            ),
            stat(
                "Runs finished (range)",
                Query(
                    f"sum by (status) (increase(aoetl_runs_finished_total{{{sel}}}[$__range]))", "{{status}}"
                ),
                width=12,
            ),
            stat("Runs stuck", Query(f"sum(aoetl_runs_stuck{{{sel}}})", "stuck")),
            ts(
                "Runs finished, by status",
                Query(
                    f"sum by (status) (increase(aoetl_runs_finished_total{{{sel}}}[{RATE}]))", "{{status}}"
                ),
            ),
            ts(
                "Run duration",
                Query(p95("aoetl_run_duration_seconds_bucket", f"{{{sel}}}"), "p95"),
                Query(quantile(0.5, "aoetl_run_duration_seconds_bucket", f"{{{sel}}}"), "p50"),
                unit="s",
            ),
        )
        .row(
            "Rows",
            ts(
                "Rows per second, by stage and direction",
                Query(
                    f"sum by (stage, direction) (rate(aoetl_rows_total{{{sel}}}[{RATE}]))",
                    "{{stage}} {{direction}}",
                ),
                unit="rowsps",
                width=24,
            ),
        )
        .row(
            "Continuous runs (kafka sources)",
            ts(
                "Source events read per second",
                Query(f"sum(rate(aoetl_stream_records_total{{{sel}}}[{RATE}]))", "events"),
                unit="ops",
                width=8,
            ),
            ts(
                "Batches per second",
                Query(f"sum(rate(aoetl_stream_batches_total{{{sel}}}[{RATE}]))", "batches"),
                unit="ops",
                width=8,
            ),
            ts(
                "Source lag, by partition",
                Query(f"sum by (partition) (aoetl_stream_lag_records{{{sel}}})", "partition {{partition}}"),
                width=8,
            ),
        )
    )


def service() -> Dashboard:
    sel = 'job="$job", instance=~"$instance"'
    return (
        Dashboard(
            "aoetl-service",
            "aoetl / Service",
            "One service (its scrape job) and its replicas: messages, errors, batches, transactions, CPU.",
            [
                query_variable("job", "Service", "label_values(aoetl_build_info, job)"),
                query_variable(
                    "instance", "Replica", 'label_values(aoetl_build_info{job="$job"}, instance)', multi=True
                ),
            ],
        )
        .row(
            "Replicas",
            stat("Up", Query(f"sum(up{{{sel}}})", "up")),
            stat("Partitions assigned", Query(f"sum(aoetl_assigned_partitions{{{sel}}})", "partitions")),
            Panel(
                "Version, by replica",
                [
                    Query(
                        f"max by (instance, version) (aoetl_build_info{{{sel}}})", "{{instance}} {{version}}"
                    )
                ],
                kind="table",
            ),
        )
        .row(
            "Messages",
            ts(
                "Consumed per second, by topic",
                Query(f"sum by (topic) (rate(aoetl_messages_consumed_total{{{sel}}}[{RATE}]))", "{{topic}}"),
                unit="ops",
            ),
            ts(
                "Produced per second, by topic",
                Query(f"sum by (topic) (rate(aoetl_messages_produced_total{{{sel}}}[{RATE}]))", "{{topic}}"),
                unit="ops",
            ),
            ts(
                "Processing errors per second, by error class",
                Query(
                    f"sum by (error_class, transient) (rate(aoetl_processing_errors_total{{{sel}}}[{RATE}]))",
                    "{{error_class}} (transient {{transient}})",
                ),
                unit="ops",
            ),
            ts(
                "Batch time p95",
                Query(p95("aoetl_batch_seconds_bucket", f"{{{sel}}}"), "p95"),
                unit="s",
            ),
            ts(
                "Transactions per second, by outcome",
                Query(f"sum by (outcome) (rate(aoetl_transactions_total{{{sel}}}[{RATE}]))", "{{outcome}}"),
                unit="ops",
            ),
            ts(
                "Retries per second",
                Query(f"sum(rate(aoetl_retries_total{{{sel}}}[{RATE}]))", "retries"),
                unit="ops",
            ),
        )
        .row(
            "Resources",
            ts(
                "CPU, by replica",
                Query(f"rate(process_cpu_seconds_total{{{sel}}}[{RATE}])", "{{instance}}"),
                unit="percentunit",
            ),
            ts(
                "Resident memory, by replica",
                Query(f"process_resident_memory_bytes{{{sel}}}", "{{instance}}"),
                unit="bytes",
            ),
        )
    )


def build_all() -> dict[str, str]:
    """File name -> the dashboard's JSON text, as committed."""
    return {
        f"{board.uid}.json": json.dumps(board.to_json(), indent=2) + "\n"
        for board in (overview(), pipeline(), service())
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = parser.parse_args(argv)
    built = build_all()
    stale = sorted(
        name
        for name, text in built.items()
        if not (OUT_DIR / name).exists() or (OUT_DIR / name).read_text() != text
    )
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run `make dashboards`", file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (OUT_DIR / name).write_text(built[name])
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
