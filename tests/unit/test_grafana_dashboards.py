"""The Grafana dashboards (deploy/grafana/): the committed JSON is what the generator builds, every panel's
query names only metrics the services export (read from the code's registries, not a list kept by hand)
and parses as PromQL (promtool), and every variable reads a label those metrics carry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana import build_dashboards as dashboards
from tests.support.exported_metrics import TARGET_LABELS, exported_families, series_labels
from tests.support.promql import matched_labels, metric_names

pytestmark = pytest.mark.unit

_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)$")
# Grafana's variables, as a query would read once Grafana has put them in.
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$pipeline": "orders", "$job": "aoetl-load"}


def boards() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in dashboards.build_all().items()}


def targets() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every query."""
    return [
        (name, panel["title"], target["expr"])
        for name, board in boards().items()
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_committed_dashboards_are_what_the_generator_builds() -> None:
    built = dashboards.build_all()
    committed = {path.name: path.read_text() for path in dashboards.OUT_DIR.glob("*.json")}
    assert set(built) == {"aoetl-overview.json", "aoetl-pipeline.json", "aoetl-service.json"}
    assert committed == built, (
        "out of date: run `make dashboards` (python -m deploy.grafana.build_dashboards)"
    )
    assert dashboards.main(["--check"]) == 0


def test_every_query_names_only_metrics_the_services_export_and_their_labels() -> None:
    exported = series_labels()
    found = targets()
    assert len(found) >= 30
    empty = [(board, title) for board, title, expr in found if not metric_names(expr)]
    assert not empty, "a query that reads no metric"
    unknown = [(board, title, sorted(metric_names(expr) - set(exported))) for board, title, expr in found]
    assert not [u for u in unknown if u[2]]
    wrong_labels = [
        (board, title, metric, sorted(labels - exported[metric]))
        for board, title, expr in found
        for metric, labels in matched_labels(expr).items()
        if labels - exported[metric]
    ]
    assert not wrong_labels


def test_every_variable_reads_a_label_of_an_exported_metric() -> None:
    families = exported_families()
    series_labels = {series: family.labels for family in families.values() for series in family.series}
    variables = [
        v for board in boards().values() for v in board["templating"]["list"] if v["type"] == "query"
    ]
    assert {v["name"] for v in variables} == {"pipeline", "job", "instance"}
    for variable in variables:
        match = _LABEL_VALUES.match(variable["query"]["query"])
        assert match, variable
        (metric,) = metric_names(match["selector"])
        assert metric in series_labels, metric
        assert match["label"] in set(series_labels[metric]) | TARGET_LABELS, variable


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), with Grafana's variables filled in."""
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: run scripts/bootstrap-system.sh (Debian: apt-get install prometheus)"
    rules = []
    for index, (_, _, expr) in enumerate(targets()):
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr.replace("$instance", ".+")})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    checked = subprocess.run(
        [tool, "check", "rules", "queries.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_panels_fit_the_grid_and_have_unique_ids() -> None:
    for name, board in boards().items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= dashboards.WIDTH, (name, panel["title"])
        assert board["uid"] == name.removesuffix(".json") and "aoetl" in board["tags"]
