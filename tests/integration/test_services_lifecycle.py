"""Each service as a real process (``python -m services.<name>``): it finds Kafka, answers /health and
/ready, exposes our metrics, logs JSON, and exits 0 promptly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TOPICS, TopicSpec
from shared.settings import KafkaSettings
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROCESSORS = ["orchestrator", "extract", "transform", "load", "monitor"]


@pytest.fixture(scope="module")
def topic_suffix(kafka_bootstrap: str) -> str:
    """Private copies of every topic, so these services never touch what other tests produce."""
    suffix = f".life-{uuid.uuid4().hex[:8]}"
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [TopicSpec(t.name + suffix, t.partitions, dict(t.config)) for t in TOPICS],
    )
    return suffix


@pytest.fixture
def service_process(
    request: pytest.FixtureRequest, kafka_bootstrap: str, topic_suffix: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    name: str = request.param
    port_file = tmp_path / "port"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_HTTP_PORT": "0",
        "AOETL_PORT_FILE": str(port_file),
        "AOETL_TOPIC_SUFFIX": topic_suffix,
        "AOETL_GROUP_ID": f"life-{name}-{uuid.uuid4().hex[:8]}",
        "AOETL_INSTANCE_ID": f"life-{uuid.uuid4().hex[:8]}",
        "AOETL_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        port = wait_until(
            lambda: proc.poll() is None and port_file.exists() and port_file.read_text().strip(),
            timeout=60,
            message=f"{name} to write its port file (stderr: {log_path})",
        )
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        print(log_path.read_text()[-5000:])  # shown by pytest only when the test fails


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5.0)


@pytest.mark.parametrize("service_process", [*PROCESSORS, "gateway"], indirect=True)
def test_service_serves_probes_and_stops_on_sigterm(
    service_process: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, base = service_process
    assert get(f"{base}/health").json() == {"status": "ok"}
    wait_until(lambda: get(f"{base}/ready").status_code == 200, timeout=90, message="/ready to answer 200")
    # the monitor is a faust app: its readiness is faust's (assigned, tables recovered)
    check = "faust" if "monitor" in proc.args[-1] else "kafka"
    assert get(f"{base}/ready").json() == {"ready": True, "checks": {check: True}}

    metrics = get(f"{base}/metrics")
    assert metrics.status_code == 200
    assert "aoetl_build_info{" in metrics.text
    assert "aoetl_messages_consumed_total" in metrics.text
    assert "aoetl_transactions_total" in metrics.text
    assert get(f"{base}/nope").status_code == 404

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 15, "graceful stop took too long"

    log_lines = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines() if line]
    messages = [line["message"] for line in log_lines]
    assert any(m.startswith("stopped cleanly (SIGTERM)") for m in messages), messages
    assert all(line["service"] and line["instance"].startswith("life-") for line in log_lines)
    assert not (tmp_path / "port").exists(), "the port file is removed on exit"


@pytest.mark.parametrize("service_process", ["extract"], indirect=True)
def test_processor_reports_its_assignment(
    service_process: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, base = service_process
    wait_until(lambda: get(f"{base}/ready").status_code == 200, timeout=90, message="/ready")
    text = get(f"{base}/metrics").text
    assigned = [line for line in text.splitlines() if line.startswith("aoetl_assigned_partitions ")]
    assert assigned and float(assigned[0].split()[-1]) == 6.0  # all six partitions of aoetl.tasks
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_bad_configuration_exits_2_with_a_readable_message(tmp_path: Path) -> None:
    env = {**os.environ, "AOETL_HTTP_PORT": "not-a-port", "AOETL_KAFKA_SECURITY_PROTOCOL": "SSL"}
    result = subprocess.run(
        [sys.executable, "-m", "services.transform"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"AOETL_HTTP_PORT: Input should be a valid integer" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("AOETL_LLM_TEMPERATURE", "hot", b"AOETL_LLM_TEMPERATURE: Input should be a valid number"),
        ("AOETL_LLM_TIMEOUT_S", "0", b"AOETL_LLM_TIMEOUT_S: Input should be greater than 0"),
        ("AOETL_LLM_MODEL", "no-such-provider:model", b"AOETL_LLM_MODEL='no-such-provider:model'"),
    ],
)
def test_orchestrator_exits_2_at_start_up_on_a_bad_llm_setting(
    variable: str, value: str, says: bytes
) -> None:
    """Not at the first intent request: the agent's settings are read, and its model built, at start-up.
    Nothing listens on the broker address, so a service that got past its settings would run until the
    timeout instead of exiting."""
    env = {**os.environ, variable: value, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "AOETL_HTTP_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "services.orchestrator"], cwd=ROOT, env=env, capture_output=True, timeout=90
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert says in result.stderr
