"""The CLI through the gateway's REST API (``aoetl.transport``) against the real gateway and stack, with
the CLI's own broker unreachable, so nothing can go through Kafka: ``submit`` and ``status`` with
``--gateway`` and the token, then a context saying ``via = "gateway"`` for ``status`` and ``definitions
list``; a run that quarantines rows for ``runs list``, ``dlq list``, ``alerts`` and ``stop``, in the
shapes the Kafka path prints; a continuous run stopped through it, CANCELLED; ``results`` listed and
followed (``--follow`` in a process of its own, stopped as ^C stops it), ``dlq show``, ``dlq replay
--dry-run`` and ``dlq replay`` of a stage input's dead letter; without a token the gateway's refusal is one
line with the authentication exit code."""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.devstack.osproc import free_port
from aoetl.failures import EXIT_AUTHENTICATION
from shared.contracts import Alert, DeadLetter, ErrorInfo, Origin, RunSummary, Stage
from shared.dead_letters import REDRIVE_HEADER
from shared.kafka.clients import make_consumer, make_producer
from shared.kafka.delivery import produce_sync
from shared.kafka.topics import Topics
from shared.settings import KafkaSettings
from tests.e2e.conftest import System
from tests.e2e.test_streaming import new_topic
from tests.helpers import wait_until
from tests.integration.test_gateway import seed_key
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateway(system: System) -> Iterator[tuple[str, str]]:
    """A gateway with API keys on the shared system: its URL and an admin's token."""
    api_port = free_port()
    token = seed_key(system.env["KAFKA_BOOTSTRAP_SERVERS"], system.suffix).token
    env = {"AOETL_API_PORT": str(api_port), "AOETL_AUTH_API_KEYS": "true"}
    started = system.supervisor.start("gateway", 1, env=env)
    try:
        system.supervisor.wait_ready(started, timeout=60)
        yield f"http://127.0.0.1:{api_port}", token
    finally:
        system.supervisor.stop("gateway")


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # no broker: every answer below came over REST
        "AOETL_CONNECT_TIMEOUT_S": "1",
        "AOETL_CONFIG": str(tmp_path / "config.toml"),
        "AOETL_POLICY_DATA_ROOTS": json.dumps([str(tmp_path)]),
        "AOETL_GATEWAY_URL": "",
        "AOETL_TOKEN": "",
        "COLUMNS": "200",
        **extra,
    }


def test_submit_status_and_definitions_through_the_gateway(
    system: System, gateway: tuple[str, str], tmp_path: Path
) -> None:
    url, token = gateway
    name = f"cli-rest-{uuid.uuid4().hex[:8]}"
    (tmp_path / "in.csv").write_text("id,amount\n1,2.5\n2,4.0\n3,1.5\n")
    spec = {
        "name": name,
        "source": {"type": "csv", "path": "in.csv"},
        "transforms": [{"op": "cast", "columns": {"id": "int64", "amount": "float64"}}],
        "destination": {"type": "jsonl", "path": "out"},
    }
    file = tmp_path / f"{name}.yaml"
    file.write_text(json.dumps(spec))
    runner = CliRunner()
    env = _cli_env(tmp_path, AOETL_TOKEN=token)

    submitted = runner.invoke(app, ["submit", str(file), "--gateway", url], env=env)
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.stdout.strip()
    final: list[dict[str, object]] = []

    def finished() -> bool:
        shown = runner.invoke(app, ["status", run_id, "--gateway", url, "-o", "json"], env=env)
        document = json.loads(shown.stdout)  # the exit code is the run's (0 while it runs)
        if document["status"] in ("SUBMITTED", "RUNNING"):
            return False
        final.append(document)
        return True

    wait_until(finished, timeout=90, message="the run to finish, seen through the gateway")
    assert final[0]["status"] == "COMPLETED" and final[0]["pipeline"] == name
    # the rows the run wrote: the request went through the gateway, the services did the rest
    written = [json.loads(line) for part in (tmp_path / "out").rglob("part-*.jsonl") for line in part.open()]
    assert sorted(row["id"] for row in written) == [1, 2, 3]

    # a context that says so: no flag, no variable
    config = tmp_path / "config.toml"
    config.write_text(
        'current_context = "remote"\n'
        f'[contexts.remote]\ngateway_url = "{url}"\ntoken = "{token}"\nvia = "gateway"\n'
    )
    os.chmod(config, 0o600)
    by_context = _cli_env(tmp_path)
    shown = runner.invoke(app, ["status", run_id, "-o", "json"], env=by_context)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["status"] == "COMPLETED", shown.output
    (tmp_path / "def.yaml").write_text(json.dumps({**spec, "name": f"{name}-def"}))
    applied = runner.invoke(
        app, ["definitions", "apply", str(tmp_path / "def.yaml"), "--gateway", url], env=env
    )
    assert applied.exit_code == 0, applied.output
    listed = runner.invoke(app, ["definitions", "list", "-o", "json"], env=by_context)
    assert listed.exit_code == 0, listed.output
    assert f"{name}-def" in [row["name"] for row in json.loads(listed.stdout)]

    runs = runner.invoke(app, ["runs", "list", "--gateway", url, "-p", name, "-o", "json"], env=env)
    assert runs.exit_code == 0, runs.output
    [summary] = json.loads(runs.stdout)  # the run history's shape (RunSummary), from GET /runs
    assert set(summary) == set(RunSummary.model_fields)
    assert (summary["run_id"], summary["status"], summary["rows_loaded"]) == (run_id, "COMPLETED", 3)
    table = runner.invoke(app, ["runs", "list", "-p", name, "--since", "1h"], env=by_context)
    assert table.exit_code == 0 and run_id in table.stdout and "1 run(s)" in table.stdout, table.output
    # `run` through the context's gateway: submitted, followed to its result, the exit code the run's
    ran = runner.invoke(app, ["run", str(file), "--timeout", "90"], env=by_context)
    assert ran.exit_code == 0, ran.output
    assert "through the gateway" in ran.stdout and "COMPLETED" in ran.stdout
    _quarantine_seen_through_the_gateway(runner, env, url, tmp_path, spec)


def _quarantine_seen_through_the_gateway(
    runner: CliRunner, env: dict[str, str], url: str, tmp_path: Path, spec: dict[str, object]
) -> None:
    """A run whose null amount is quarantined: its dead letter, the monitor's alert, a stop once finished."""
    (tmp_path / "nulls.csv").write_text("id,amount\n1,2.5\n2,\n")
    quality = [{"rule": "not_null", "columns": ["amount"], "on_fail": "quarantine", "name": "has-amount"}]
    name = f"{spec['name']}-q"
    (tmp_path / "q.yaml").write_text(
        json.dumps({**spec, "name": name, "source": {"type": "csv", "path": "nulls.csv"}, "quality": quality})
    )
    submitted = runner.invoke(app, ["submit", str(tmp_path / "q.yaml"), "--gateway", url], env=env)
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.stdout.strip()
    letters: list[dict[str, object]] = []

    def dead_lettered() -> bool:
        shown = runner.invoke(app, ["dlq", "list", "--gateway", url, "--run", run_id, "-o", "json"], env=env)
        assert shown.exit_code == 0, shown.output
        letters[:] = json.loads(shown.stdout)
        return bool(letters)

    wait_until(dead_lettered, timeout=90, message="the quarantined row's dead letter, through the gateway")
    assert letters[0]["run_id"] == run_id and letters[0]["payload_format"] == "arrow_ipc"
    assert letters[0]["stage"] == "transform" and int(str(letters[0]["payload_bytes"])) > 0
    table = runner.invoke(app, ["dlq", "list", "--gateway", url, "--run", run_id], env=env)
    assert table.exit_code == 0 and f"{len(letters)} dead letter(s)" in table.stdout, table.output
    alerts: list[Alert] = []

    def alerted() -> bool:
        shown = runner.invoke(app, ["alerts", "--gateway", url, "-o", "json"], env=env)
        assert shown.exit_code == 0, shown.output
        alerts[:] = [Alert.model_validate(a) for a in json.loads(shown.stdout) if a["run_id"] == run_id]
        return bool(alerts)

    wait_until(alerted, timeout=90, message="the monitor's quality alert, through the gateway")
    lines = runner.invoke(app, ["alerts", "--gateway", url], env=env)
    assert lines.exit_code == 0 and f"run={run_id}" in lines.stdout, lines.output
    follower = _follow(url, env, "alerts")
    try:  # followed over REST: the alert the listing showed is shown once, from the beginning
        wait_until(
            lambda: [a for a in follower.lines() if a["run_id"] == run_id],
            timeout=60,
            message="the quality alert, followed through the gateway",
        )
    finally:
        follower.stop()
    assert [a["alert_id"] for a in follower.seen if a["run_id"] == run_id] == [a.alert_id for a in alerts]

    def finished() -> bool:
        shown = runner.invoke(app, ["status", run_id, "--gateway", url, "-o", "json"], env=env)
        return json.loads(shown.stdout)["status"] not in ("SUBMITTED", "RUNNING")

    wait_until(finished, timeout=90, message="the quarantining run to finish")
    stopped = runner.invoke(app, ["stop", run_id, "--gateway", url], env=env)
    assert stopped.exit_code == 0 and "already finished" in stopped.stdout, stopped.output


def test_stop_of_a_continuous_run_through_the_gateway(
    system: System, gateway: tuple[str, str], tmp_path: Path
) -> None:
    url, token = gateway
    topic = new_topic(system.env["KAFKA_BOOTSTRAP_SERVERS"], 1)
    spec = {
        "name": f"cli-rest-stop-{uuid.uuid4().hex[:6]}",
        "source": {"type": "kafka", "topic": topic, "format": "json"},
        "destination": {"type": "jsonl", "path": "out"},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(spec))
    runner = CliRunner()
    env = _cli_env(tmp_path, AOETL_TOKEN=token)
    submitted = runner.invoke(app, ["submit", str(tmp_path / "c.yaml"), "--gateway", url], env=env)
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.stdout.strip()

    def running() -> bool:
        shown = runner.invoke(app, ["status", run_id, "--gateway", url, "-o", "json"], env=env)
        return json.loads(shown.stdout)["status"] == "RUNNING"

    wait_until(running, timeout=90, message="the continuous run to be running, seen through the gateway")
    stopped = runner.invoke(app, ["stop", run_id, "--gateway", url, "--timeout", "90"], env=env)
    assert stopped.exit_code == 0 and "CANCELLED" in stopped.stdout, stopped.output


def test_without_a_token_the_refusal_is_one_line(gateway: tuple[str, str], tmp_path: Path) -> None:
    url, _ = gateway
    (tmp_path / "in.csv").write_text("id\n1\n")
    spec = {
        "name": "cli-rest-anon",
        "source": {"type": "csv", "path": "in.csv"},
        "destination": {"type": "jsonl", "path": "o"},
    }
    (tmp_path / "s.yaml").write_text(json.dumps(spec))
    refused = CliRunner().invoke(
        app, ["submit", str(tmp_path / "s.yaml"), "--gateway", url], env=_cli_env(tmp_path)
    )
    assert refused.exit_code == EXIT_AUTHENTICATION, refused.output
    assert "401" in refused.stderr and "aoetl auth login" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_dlq_show_replay_and_results_through_the_gateway(
    system: System, gateway: tuple[str, str], tmp_path: Path
) -> None:
    """A run's result listed and followed, and a dead letter of a stage input (its key not UTF-8) shown,
    replayed dry (nothing published) and for real (its bytes and key on the origin topic, with the redrive
    header), all with the CLI's broker unreachable."""
    url, token = gateway
    env = _cli_env(tmp_path, AOETL_TOKEN=token)
    runner = CliRunner()
    follower = _follow(url, env, "results")  # from the beginning: it need not be up before the first run ends
    try:
        (tmp_path / "in.csv").write_text("id\n1\n2\n")
        name = f"cli-rest-results-{uuid.uuid4().hex[:6]}"
        spec = {
            "name": name,
            "source": {"type": "csv", "path": "in.csv"},
            "destination": {"type": "jsonl", "path": "o"},
        }
        (tmp_path / "r.yaml").write_text(json.dumps(spec))
        run_ids = []
        for _ in range(2):  # the second ends while the follower is surely following: seen by polling
            submitted = runner.invoke(app, ["submit", str(tmp_path / "r.yaml"), "--gateway", url], env=env)
            assert submitted.exit_code == 0, submitted.output
            run_ids.append(run_id := submitted.stdout.strip())
            followed: dict[str, Any] = wait_until(
                lambda: next((r for r in follower.lines() if r["run_id"] == run_id), {}),
                timeout=90,
                message="the run's result, followed through the gateway",
            )
            assert followed["status"] == "COMPLETED" and followed["pipeline"] == name
    finally:
        follower.stop()
    listed = runner.invoke(app, ["results", "--gateway", url, "-o", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    statuses = {r["run_id"]: r["status"] for r in json.loads(listed.stdout) if r["run_id"] in run_ids}
    assert statuses == dict.fromkeys(run_ids, "COMPLETED")

    operator = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
    origin = system.client.topic(Topics.DATA_TRANSFORMED)
    key = b"\xff\xfe-not-utf8"
    letter = DeadLetter(
        origin=Origin(topic=origin, partition=0, offset=0, key=key),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message="a test letter"),
        run_id=run_id,  # its tenant is the run's, known to the gateway from the request it took
        payload=b"the original bytes",
    )
    letters_topic = system.client.topic(Topics.DEAD_LETTERS)
    produce_sync(make_producer(operator), letters_topic, system.client.serde.encode(letter), run_id)

    shown: list[dict[str, object]] = []

    def letter_shown() -> bool:
        found = runner.invoke(
            app, ["dlq", "show", letter.dead_letter_id, "--gateway", url, "-o", "json"], env=env
        )
        if found.exit_code == 0:
            shown.append(json.loads(found.stdout))
        return bool(shown)

    wait_until(letter_shown, timeout=60, message="the dead letter, shown through the gateway")
    assert shown[0]["origin"] == {
        "topic": origin,
        "partition": 0,
        "offset": 0,
        "key_base64": base64.b64encode(key).decode(),
        "schema_fingerprint": None,
    }
    assert shown[0]["payload_bytes"] == len(b"the original bytes") and shown[0]["run_id"] == run_id

    before = _ends(operator, origin)
    dry = runner.invoke(
        app, ["dlq", "replay", letter.dead_letter_id, "--dry-run", "--gateway", url, "-o", "json"], env=env
    )
    assert dry.exit_code == 0, dry.output
    [plan] = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["replayed_to"] == {
        "topic": origin,
        "partition": None,
        "offset": None,
    }
    assert _ends(operator, origin) == before  # nothing was published

    done = runner.invoke(
        app, ["dlq", "replay", letter.dead_letter_id, "--gateway", url, "--yes", "-o", "json"], env=env
    )
    assert done.exit_code == 0, done.output
    [replayed] = json.loads(done.stdout)
    to = replayed["replayed_to"]
    record = _record_at(operator, origin, int(to["partition"]), int(to["offset"]))
    assert record.value() == b"the original bytes" and record.key() == key
    assert dict(record.headers() or [])[REDRIVE_HEADER] == letter.dead_letter_id.encode()


class _Follower:
    """``aoetl results|alerts --follow --json`` in a process of its own (it runs until stopped), its lines
    read on a thread into a queue."""

    def __init__(self, process: subprocess.Popen[str]):
        self.process = process
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line)

    def lines(self) -> list[dict[str, Any]]:
        while not self.queue.empty():
            self.seen.append(json.loads(self.queue.get()))
        if self.process.poll() is not None and self.queue.empty():
            raise AssertionError(f"--follow ended: {self.process.returncode}")
        return self.seen

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # as ^C: the command ends cleanly
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _follow(url: str, env: dict[str, str], command: str) -> _Follower:
    """``aoetl <command> -f --from-beginning --json`` through the gateway, in a process of its own."""
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "aoetl.cli", command, "-f", "--from-beginning", "--json", "--gateway", url],
        env={**os.environ, **env, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        text=True,
    )
    return _Follower(process)


def _ends(operator: KafkaSettings, topic: str) -> list[int]:
    consumer = make_consumer(operator, f"cli-rest-{uuid.uuid4().hex}")
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
            for p in sorted(partitions)
        ]
    finally:
        consumer.close()


def _record_at(operator: KafkaSettings, topic: str, partition: int, offset: int) -> Message:
    consumer = make_consumer(operator, f"cli-rest-{uuid.uuid4().hex}")
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        found = wait_until(lambda: consumer.poll(1.0), timeout=30, message="the re-driven record")
        assert found is not None and found.error() is None and found.offset() == offset
        return found
    finally:
        consumer.close()
