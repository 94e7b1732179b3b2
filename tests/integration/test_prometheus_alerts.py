"""A real Prometheus server (Debian's ``prometheus`` binary) scrapes the monitor's /metrics on loopback and
evaluates the shipped alert rules (deploy/prometheus/aoetl-alerts.rules.yml): a FAILED run fires
AoetlRunFailed for its pipeline, and not before."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aoetl.devstack.osproc import free_port
from shared.contracts import ErrorInfo, EventKind, RunAccepted, RunStatus
from tests.helpers import wait_until
from tests.support.monitor_stack import Stack, monitor_stack

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "aoetl-alerts.rules.yml"


class PrometheusServer:
    """``prometheus`` on a loopback port of its own, scraping and evaluating every second."""

    def __init__(self, workdir: Path, targets: dict[str, str]):
        binary = shutil.which("prometheus")
        assert binary, (
            "prometheus is missing: run scripts/bootstrap-system.sh (Debian: apt-get install prometheus)"
        )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.url = f"http://127.0.0.1:{free_port()}"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=60, message=f"prometheus /-/ready\n{self.tail()}")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}\n{self.tail()}"
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def tail(self, lines: int = 30) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    with monitor_stack(kafka_bootstrap, tmp_path) as stack_:
        yield stack_


def test_a_failed_run_fires_the_failure_alert_in_a_real_prometheus(stack: Stack, tmp_path: Path) -> None:
    pipeline, run_id = f"prom-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    monitor = stack.monitor("monitor-1")
    prometheus: PrometheusServer | None = None
    try:
        prometheus = PrometheusServer(tmp_path, {"aoetl-monitor": f"127.0.0.1:{monitor.port}"})
        failed = f'aoetl_runs_finished_total{{pipeline="{pipeline}", status="FAILED"}}'

        # The run starts: the monitor creates its pipeline's counters at 0, and Prometheus scrapes them.
        stack.event(run_id, EventKind.RUN_ACCEPTED, payload=RunAccepted(pipeline=pipeline, stuck_after_s=600))
        scraped = wait_until(
            lambda: prometheus.query(failed), timeout=60, message=f"{failed} at 0 in Prometheus"
        )
        assert float(scraped[0]["value"][1]) == 0
        assert scraped[0]["metric"]["job"] == "aoetl-monitor"  # the target names the service
        assert not prometheus.alerts("AoetlRunFailed")

        stack.result(
            run_id, pipeline, RunStatus.FAILED, [ErrorInfo(error_class="SourceUnavailable", message="x")]
        )

        def firing() -> list[dict[str, Any]]:
            return [a for a in prometheus.alerts("AoetlRunFailed") if a["state"] == "firing"]

        (alert,) = wait_until(firing, timeout=60, message=f"AoetlRunFailed firing\n{prometheus.tail()}")
        assert alert["labels"] == {
            "alertname": "AoetlRunFailed",
            "pipeline": pipeline,
            "status": "FAILED",
            "severity": "critical",
        }
        assert alert["annotations"]["summary"] == f"Pipeline {pipeline}: a run ended FAILED"
        assert monitor.stop() == 0, monitor.tail()
    finally:
        if prometheus is not None:
            prometheus.stop()
        monitor.stop()
