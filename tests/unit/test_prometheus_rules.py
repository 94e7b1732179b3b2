"""The shipped alert rules (deploy/prometheus/): promtool checks them and runs their unit tests (input
series, expected alerts), every alert has such a test, and every metric they name is one the services
export (read from the code's registries). promtool comes from Debian's prometheus package, which
scripts/bootstrap-system.sh installs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.exported_metrics import series_labels
from tests.support.promql import matched_labels, metric_names

pytestmark = pytest.mark.unit

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = sorted(PROMETHEUS_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: run scripts/bootstrap-system.sh (Debian: apt-get install prometheus)"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, str]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_the_rule_files_pass_promtool_check() -> None:
    assert RULE_FILES
    checked = promtool("check", "rules", *(p.name for p in RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_unit_tests_pass() -> None:
    assert TEST_FILES
    tested = promtool("test", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in TEST_FILES))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_example_configuration_is_valid_and_loads_the_rules() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert sorted(config["rule_files"]) == [p.name for p in RULE_FILES]


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The check is no formality: a rule whose expression does not parse fails it."""
    text = (
        RULE_FILES[0]
        .read_text()
        .replace("sum by (pipeline) (aoetl_runs_stuck) > 0", "sum by (pipeline) (aoetl_runs_stuck > 0")
    )
    assert text != RULE_FILES[0].read_text()
    (tmp_path / "broken.rules.yml").write_text(text)
    checked = promtool("check", "rules", "broken.rules.yml", cwd=tmp_path)
    assert checked.returncode != 0 and "broken.rules.yml" in checked.stdout + checked.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert len(alerts) >= 7
    assert alerts <= tested, f"alerts never seen firing in a test: {sorted(alerts - tested)}"


def test_the_rules_name_only_metrics_the_services_export_and_their_labels() -> None:
    exported = series_labels()
    named = {rule.get("alert") or rule["record"]: metric_names(rule["expr"]) for rule in rules()}
    assert all(named.values()), named
    unknown = {rule: sorted(names - set(exported)) for rule, names in named.items() if names - set(exported)}
    assert not unknown
    wrong_labels = {
        (rule.get("alert") or rule["record"], metric): sorted(labels - exported[metric])
        for rule in rules()
        for metric, labels in matched_labels(rule["expr"]).items()
        if labels - exported[metric]
    }
    assert not wrong_labels


def test_metric_names_finds_selectors_and_nothing_else() -> None:
    expression = """
        sum by (pipeline, status) (
          (aoetl_x_total{status=~"FAILED|x{y}"} > 0 unless aoetl_x_total offset 10m)
          and on (job, instance) (up offset 10m == 1)
          or increase(aoetl_y_total{pipeline="$pipeline"}[$__rate_interval]) > 1e3
        ) / ignoring(le) histogram_quantile(0.95, sum(rate(h_bucket[5m:1m])) by (le)) and time() - m
    """
    assert metric_names(expression) == {"aoetl_x_total", "up", "aoetl_y_total", "h_bucket", "m"}
    assert matched_labels(expression) == {
        "aoetl_x_total": {"status"},
        "aoetl_y_total": {"pipeline"},
    }
