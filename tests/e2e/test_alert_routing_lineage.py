"""Issue 12, alert routing and lineage on the whole system (every service a process, real broker and
PostgreSQL), on a system of its own: its monitor delivers RUN_FAILED alerts to a local HTTP receiver and
writes OpenLineage events with the library's file transport.

* A run that COMPLETES and a run that FAILS (its source matches no file) each give exactly one START and one
  COMPLETE or FAIL event, valid against the OpenLineage JSON Schemas, with the spec's datasets and their
  schema facets.
* The failed run's RUN_FAILED alert reaches the receiver, which answers 503 twice, and is accepted exactly
  once with a signature the project's own Standard Webhooks verifier accepts; the receiver gets no other
  alert kind (the endpoint's filter).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.monitor.lineage.events import lineage_run_id
from shared.contracts import Alert, AlertKind, RunStatus
from shared.kafka.topics import Topics
from shared.webhooks.signatures import verify_standard
from tests.e2e.conftest import System, running_system
from tests.e2e.test_pipelines import assert_completed, orders_spec, run_spec, write_orders
from tests.helpers import wait_until
from tests.support.alert_receiver import Receiver, alert_receiver
from tests.support.openlineage_schema import validate_run_event

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + "ZTJlLWFsZXJ0LXJvdXRpbmctc2lnbmluZy1rZXk="
T = TypeVar("T")
REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 1, "load": 1, "monitor": 1}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with alert_receiver((503, {}), (503, {})) as receiver_:
        yield receiver_


@pytest.fixture(scope="module")
def lineage_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lineage") / "events.jsonl"


@pytest.fixture(scope="module")
def routed_system(
    kafka_bootstrap: str, postgres_dsn: str, receiver: Receiver, lineage_file: Path
) -> Iterator[System]:
    env = {
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(lineage_file),
        "OPENLINEAGE__TRANSPORT__APPEND": "true",
        "AOETL_ALERT_ROUTING_ENDPOINTS": json.dumps(
            {
                "ops": {
                    "url": {"env": "E2E_ALERT_URL"},
                    "secret": {"env": "E2E_ALERT_SECRET"},
                    "kinds": ["RUN_FAILED"],
                }
            }
        ),
        "AOETL_ALERT_ROUTING_EGRESS_ALLOW": f"127.0.0.1:{receiver.port}",
        "AOETL_ALERT_ROUTING_INITIAL_BACKOFF_S": "0.2",
        "E2E_ALERT_URL": receiver.url,
        "E2E_ALERT_SECRET": SECRET,
    }
    with running_system(kafka_bootstrap, postgres_dsn, REPLICAS, env) as system:
        yield system


def lineage_of(path: Path, run_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    wanted = lineage_run_id(run_id)
    return [e for e in events if e["run"]["runId"] == wanted]


def monitor_log(system: System, lines: int = 60) -> str:
    logs = sorted((system.state_dir / "logs").glob("monitor-*.log"))
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else "(no log)"


def waited(system: System, predicate: Callable[[], T], message: str) -> T:
    """``wait_until`` that shows the monitor's log when it times out."""
    try:
        return wait_until(predicate, timeout=60, message=message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nmonitor log:\n{monitor_log(system)}") from None


def test_a_completed_and_a_failed_run_give_valid_lineage_and_the_failure_one_signed_alert(
    routed_system: System, receiver: Receiver, lineage_file: Path, tmp_path: Path
) -> None:
    write_orders(tmp_path / "in", 600, files=1, seed=5)
    source = {"type": "csv", "path": str(tmp_path / "in" / "*.csv")}
    good = run_spec(
        routed_system, orders_spec("lineage-ok-e2e", source, {"type": "jsonl", "path": str(tmp_path / "out")})
    )
    assert_completed(good)
    missing = {"type": "csv", "path": str(tmp_path / "nope-*.csv")}  # fails at planning: nothing to heal
    bad = run_spec(
        routed_system,
        orders_spec("lineage-fail-e2e", missing, {"type": "jsonl", "path": str(tmp_path / "out-2")}),
    )
    assert bad.status is RunStatus.FAILED

    for result, terminal, read in ((good, "COMPLETE", source), (bad, "FAIL", missing)):
        events = waited(
            routed_system,
            lambda r=result, t=terminal: (
                (e := lineage_of(lineage_file, r.run_id)) and any(x["eventType"] == t for x in e) and e
            ),
            f"the lineage of run {result.run_id}",
        )
        assert [e["eventType"] for e in events] == ["START", terminal]
        for event in events:
            validate_run_event(event)
            assert (event["job"]["namespace"], event["job"]["name"]) == ("aoetl", result.pipeline)
            (dataset,) = event["inputs"]
            assert (dataset["namespace"], dataset["name"]) == ("file", read["path"])
            (output,) = event["outputs"]
            assert output["namespace"] == "file" and output["name"].startswith(str(tmp_path / "out"))
            # the spec's columns: the leading cast's read, plus the derived one written
            assert [f["name"] for f in dataset["facets"]["schema"]["fields"]] == ["id", "amount", "qty"]
            fields = output["facets"]["schema"]["fields"]
            assert [(f["name"], f.get("type")) for f in fields] == [
                ("id", "int64"), ("amount", "float64"), ("qty", "int64"), ("total", None)
            ]  # fmt: skip
        if terminal == "FAIL":
            assert events[1]["run"]["facets"]["errorMessage"]["message"]

    with routed_system.client.reader(Topics.ALERTS, from_beginning=True) as reader:
        alerts: list[Alert] = []

        def failure_alert() -> Alert | None:
            alerts.extend(v for _, v in reader.poll({Topics.ALERTS: Alert}) if isinstance(v, Alert))
            return next(
                (a for a in alerts if a.run_id == bad.run_id and a.kind is AlertKind.RUN_FAILED), None
            )

        alert = waited(routed_system, failure_alert, "the RUN_FAILED alert")
    assert alert is not None
    waited(routed_system, lambda: receiver.accepted(), "the accepted delivery")
    attempts = receiver.of(alert.alert_id)
    assert [d.answered for d in attempts] == [503, 503, 200]
    for delivery in attempts:
        verify_standard(delivery.body, delivery.headers, [SECRET])
    assert {d.json()["data"]["kind"] for d in receiver.deliveries} == {"RUN_FAILED"}
    assert len(receiver.accepted()) == 1
