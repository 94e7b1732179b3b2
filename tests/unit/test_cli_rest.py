"""The REST strategy of ``aoetl.transport`` for ``runs list``, ``dlq list``, ``alerts [--follow]``, ``stop``
and ``run``, on a fake gateway (``httpx.MockTransport``) that pages one record at a time: every page read,
the Kafka path's order and shapes (a run as the run history's summary, oldest first for records), the
filters the gateway lacks applied by the CLI. tests/e2e/test_cli_rest.py runs the same commands against the
real gateway."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import aoetl.commands.config
from aoetl.cli import app
from shared.contracts import RunSummary

pytestmark = pytest.mark.unit

URL = "http://gateway.test"
T = "2026-01-01T00:00:0{}+00:00"
ERROR = {"error_class": "CastError", "message": "bad", "retryable": False}


def _run(run_id: str, status: str, second: int, **more: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "tenant": "default",
        "status": status,
        "pipeline": "orders",
        "submitted_at": T.format(second),
        "stages": {"load": {"rows_out": 3, "batches": 1}},
        **more,
    }


def _letter(n: int, stage: str) -> dict[str, Any]:
    return {
        "dead_letter_id": f"d{n}",
        "tenant": "default",
        "stage": stage,
        "at": T.format(n),
        "origin": {"topic": "t", "partition": 0, "offset": n},
        "error": ERROR,
        "run_id": "r1",
        "rule": None,
        "payload_format": "avro",
        "payload_bytes": 10,
        "attempt": 1,
    }


def _alert(n: int) -> dict[str, Any]:
    return {
        "alert_id": f"a{n}",
        "kind": "QUALITY_THRESHOLD",
        "severity": "WARNING",
        "message": f"m{n}",
        "at": T.format(n),
        "run_id": "r1",
    }


RESULT = {
    "request_id": "q",
    "pipeline": "orders",
    "started_at": T.format(4),
    "finished_at": T.format(5),
}


class FakeGateway:
    """Newest first, one record a page (whatever the limit asked), as ``services.gateway.records_api``."""

    def __init__(self) -> None:
        self.runs = [_run("r3", "RUNNING", 3), _run("r2", "SUBMITTED", 2), _run("r1", "COMPLETED", 1)]
        self.letters = [_letter(3, "load"), _letter(2, "transform"), _letter(1, "load")]
        self.alerts = [_alert(2), _alert(1)]
        self.asked: list[str] = []
        self.result: dict[str, Any] | None = None
        self.submitted: dict[str, Any] | None = None
        self.listings = 0  # of GET /alerts, each from offset 0
        self.on_listing: dict[int, Callable[[], None]] = {}  # what changes before the n-th listing
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(f"{request.method} {request.url.path}?{request.url.query.decode()}")
        path, query = request.url.path, request.url.params
        if request.method == "POST" and path == "/runs/r3/stop":
            self.result = {**RESULT, "run_id": "r3", "status": "CANCELLED"}
            return httpx.Response(202, json={"run_id": "r3", "request_id": "s"})
        if path == "/runs/r3":
            return httpx.Response(200, json=_run("r3", "RUNNING", 3, result=self.result))
        if request.method == "POST" and path == "/runs":
            self.submitted = json.loads(request.content)["spec"]
            return httpx.Response(202, json={"run_id": "r4"})
        if path == "/runs/r4":  # asked for until it has a result: SUBMITTED, RUNNING twice, then COMPLETED
            self.polls += 1
            status = "SUBMITTED" if self.polls == 1 else "RUNNING"
            done = self.polls >= 4
            result = {**RESULT, "run_id": "r4", "status": "COMPLETED"} if done else None
            return httpx.Response(200, json=_run("r4", "COMPLETED" if done else status, 4, result=result))
        if path == "/alerts" and query["offset"] == "0":  # a new listing
            self.listings += 1
            if self.listings == 5:
                raise KeyboardInterrupt
            self.on_listing.get(self.listings, lambda: None)()
        records = {"/runs": self.runs, "/alerts": self.alerts, "/dead-letters": self.letters}[path]
        if path == "/runs" and "status" in query:
            records = [r for r in records if r["status"] == query["status"]]
        offset = int(query["offset"])
        key = path.strip("/").replace("-", "_")
        return httpx.Response(
            200, json={"total": len(records), "limit": 1, "offset": offset, key: records[offset : offset + 1]}
        )


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    fake = FakeGateway()

    def client(url: str, config: object = None) -> httpx.Client:  # a new one a command: each closes its own
        return httpx.Client(base_url=URL, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(aoetl.commands.config, "gateway_client", client)
    return fake


def invoke(*args: str) -> Any:
    env = {"COLUMNS": "200", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "AOETL_GATEWAY_URL": URL}
    return CliRunner().invoke(app, list(args), env=env)


def test_runs_list_pages_and_answers_in_the_run_historys_shape(gateway: FakeGateway) -> None:
    shown = invoke("runs", "list", "-o", "json")
    assert shown.exit_code == 0, shown.output
    runs = json.loads(shown.stdout)
    assert [r["run_id"] for r in runs] == ["r3", "r2", "r1"]  # newest first, all three pages
    assert all(set(r) == set(RunSummary.model_fields) for r in runs)
    assert [r["status"] for r in runs] == [None, None, "COMPLETED"] and runs[0]["rows_loaded"] == 3
    running = json.loads(invoke("runs", "list", "-s", "running", "-o", "json").stdout)
    assert [r["run_id"] for r in running] == ["r3", "r2"]  # RUNNING: not finished, SUBMITTED too
    assert not any("status=" in asked for asked in gateway.asked)
    table = invoke("runs", "list", "-s", "completed", "-n", "1")
    assert "r1" in table.stdout and "1 run(s)" in table.stdout and "status=COMPLETED" in gateway.asked[-1]


def test_dlq_list_is_oldest_first_and_filtered_by_stage(gateway: FakeGateway) -> None:
    shown = invoke("dlq", "list", "--stage", "load", "-o", "json")
    assert shown.exit_code == 0, shown.output
    assert [d["dead_letter_id"] for d in json.loads(shown.stdout)] == ["d1", "d3"]
    table = invoke("dlq", "list")
    assert (
        "3 dead letter(s)" in table.stdout and "CastError: bad" in table.stdout and "t[0]@2" in table.stdout
    )


def test_alerts_are_listed_oldest_first_and_not_followed(gateway: FakeGateway) -> None:
    shown = invoke("alerts", "-o", "json")
    assert shown.exit_code == 0, shown.output
    assert [a["alert_id"] for a in json.loads(shown.stdout)] == ["a1", "a2"]
    assert "run=r1: m2" in invoke("alerts").stdout


def test_alerts_followed_by_asking_again_show_each_new_one_once(
    gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aoetl.rest_transport.POLL_S", 0.01)
    gateway.on_listing = {
        2: lambda: gateway.alerts.insert(0, _alert(3)),  # a new one
        3: lambda: gateway.alerts.append(_alert(0)),  # one that came late, with an older `at`
    }
    followed = invoke("alerts", "--follow", "-o", "json")  # the fake's 5th listing is the user's ^C
    assert followed.exit_code == 0, followed.output
    assert [json.loads(line)["alert_id"] for line in followed.stdout.splitlines()] == ["a3", "a0"]
    gateway.listings, gateway.alerts = 0, [_alert(2), _alert(1)]
    again = invoke("alerts", "--follow", "--from-beginning", "-o", "json")
    assert [json.loads(line)["alert_id"] for line in again.stdout.splitlines()] == ["a1", "a2", "a3", "a0"]


def test_stop_asks_the_gateway_and_waits_for_the_result(gateway: FakeGateway) -> None:
    stopped = invoke("stop", "r3", "--timeout", "5")
    assert stopped.exit_code == 0, stopped.output
    assert "CANCELLED" in stopped.stdout and "POST /runs/r3/stop?" in gateway.asked


def test_run_submits_through_the_gateway_and_asks_until_the_result(
    gateway: FakeGateway, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aoetl.rest_transport.POLL_S", 0.01)
    (tmp_path / "in.csv").write_text("id\n1\n")
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: orders\nsource: {type: csv, path: in.csv}\ndestination: {type: jsonl, path: out}\n"
    )
    ran = invoke("run", str(spec), "--timeout", "5")
    assert ran.exit_code == 0, ran.output
    assert gateway.submitted is not None and gateway.submitted["name"] == "orders"
    assert gateway.submitted["source"]["path"] == str(tmp_path / "in.csv")  # resolved against the file
    assert gateway.polls == 4  # asked again until the result came
    lines = ran.stdout.splitlines()
    assert "submitted run r4 through the gateway" in lines[0]
    assert [line.strip() for line in lines[1:3]] == ["SUBMITTED", "RUNNING"]  # each status change once
    assert "COMPLETED" in ran.stdout
    no_wait = invoke("run", str(spec), "--no-wait")
    assert no_wait.exit_code == 0 and no_wait.stdout.strip() == "r4"
