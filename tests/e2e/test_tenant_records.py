"""End to end, every service a process, on the real broker and PostgreSQL, with the gateway in front: a
run of tenant ``acme`` that quarantines a row (a dead letter, written by transform, which knows no tenant)
and fails a quality rule at level ``fail`` (the monitor's QUALITY_THRESHOLD alert, whose tenant it learns
from the run's RUN_ACCEPTED; the healer then quarantines those rows too and the run completes). Its
result, alert and dead letters are acme's: the records on Kafka name acme where their writer knows it (the
orchestrator's result, the monitor's alert), and acme's viewer reads all of them through
``GET /runs/{id}``, ``GET /runs``, ``GET /alerts`` and ``GET /dead-letters``, while an admin of
``globex`` finds none of them. On the package's shared system (its run, pipeline and tenants are this
module's own), with a gateway of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth.keys import IssuedKey
from shared.contracts import Alert, AlertKind, PipelineResult, Role
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.helpers import wait_until
from tests.integration.test_gateway import RunningGateway, seed_key, start_gateway

pytestmark = pytest.mark.e2e

TENANT, OTHER = "acme", "globex"


@pytest.fixture
def keys(system: System, kafka_bootstrap: str) -> dict[str, IssuedKey]:
    """acme's operator and viewer, globex's admin: on the keys topic before the gateway reads it."""
    return {
        "operator": seed_key(kafka_bootstrap, system.suffix, Role.OPERATOR, TENANT),
        "viewer": seed_key(kafka_bootstrap, system.suffix, Role.VIEWER, TENANT),
        "other": seed_key(kafka_bootstrap, system.suffix, Role.ADMIN, OTHER),
    }


@pytest.fixture
def gateway(system: System, kafka_bootstrap: str, keys: dict[str, IssuedKey]) -> Iterator[RunningGateway]:
    running = start_gateway(kafka_bootstrap, system.suffix, admin=keys["other"])
    yield running
    running.stop()


def spec(out: Path) -> dict[str, Any]:
    return {
        "name": "tenant-records",
        "source": {"type": "event"},
        "destination": {"type": "jsonl", "path": str(out)},
        "quality": [
            {"rule": "not_null", "columns": ["customer"], "on_fail": "quarantine", "name": "has-customer"},
            {"rule": "range", "column": "amount", "min": 0, "on_fail": "fail", "name": "no-refunds"},
        ],
    }


ROWS = [
    {"id": 1, "customer": "ann", "amount": 5},
    {"id": 2, "customer": None, "amount": 3},  # quarantined: a dead letter of the run
    {"id": 3, "customer": "bob", "amount": -1},  # fails the rule: an alert (then healed by quarantine)
]


def test_a_runs_result_alerts_and_dead_letters_are_visible_to_its_tenant_only(
    system: System, gateway: RunningGateway, keys: dict[str, IssuedKey], tmp_path: Path
) -> None:
    def calls(key: IssuedKey) -> httpx.Client:
        return httpx.Client(
            base_url=gateway.url, headers={"Authorization": f"Bearer {key.token}"}, timeout=10
        )

    with (
        system.client.reader(Topics.RESULTS, Topics.ALERTS, from_beginning=False) as kafka,
        calls(keys["operator"]) as operator,
        calls(keys["viewer"]) as viewer,
        calls(keys["other"]) as other,
    ):
        submitted = operator.post("/runs", json={"spec": spec(tmp_path / "out"), "payload": ROWS})
        assert submitted.status_code == 202, submitted.text
        run_id = submitted.json()["run_id"]

        # on Kafka: the orchestrator's result and the monitor's alerts name acme
        seen: list[Any] = []

        def written() -> bool:
            polled = kafka.poll({Topics.RESULTS: PipelineResult, Topics.ALERTS: Alert})
            seen.extend(v for _, v in polled if getattr(v, "run_id", None) == run_id)
            kinds = {v.kind for v in seen if isinstance(v, Alert)}
            return any(isinstance(v, PipelineResult) for v in seen) and AlertKind.QUALITY_THRESHOLD in kinds

        wait_until(written, timeout=90, interval=0.5, message="the run's result and its quality alert")
        [result] = [v for v in seen if isinstance(v, PipelineResult)]
        assert result.tenant == TENANT and result.stages[1].rows_rejected == 2, result
        assert {v.tenant for v in seen if isinstance(v, Alert)} == {TENANT}

        # through the gateway, to acme's viewer
        def read(path: str, field: str) -> list[dict[str, Any]]:
            answer = viewer.get(path, params={"run_id": run_id})
            assert answer.status_code == 200, answer.text
            return answer.json()[field]

        view = wait_until(
            lambda: (v := viewer.get(f"/runs/{run_id}").json()).get("result") and v,
            timeout=60,
            interval=0.5,
            message="the gateway to read the result",
        )
        assert view["tenant"] == TENANT and view["result"]["status"] == result.status.value
        assert view["result"]["tenant"] == TENANT
        listed = viewer.get("/runs", params={"pipeline": "tenant-records"}).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id]
        alerts = wait_until(
            lambda: [a for a in read("/alerts", "alerts") if a["kind"] == AlertKind.QUALITY_THRESHOLD],
            timeout=60,
            interval=0.5,
            message="the gateway to read the alert",
        )
        assert {a["tenant"] for a in alerts} == {TENANT}
        letters = wait_until(
            lambda: read("/dead-letters", "dead_letters"),
            timeout=60,
            interval=0.5,
            message="the gateway to read the dead letter",
        )
        assert "has-customer" in {d["rule"] for d in letters}
        assert {(d["stage"], d["tenant"]) for d in letters} == {("transform", TENANT)}
        assert all(d["payload_bytes"] > 0 and "payload" not in d for d in letters)

        # another tenant's admin: nothing of it, on any endpoint
        assert other.get(f"/runs/{run_id}").status_code == 404
        assert run_id not in json.dumps(other.get("/runs").json())
        assert other.get("/alerts", params={"run_id": run_id}).json()["alerts"] == []
        assert run_id not in json.dumps(other.get("/alerts").json())
        assert run_id not in json.dumps(other.get("/dead-letters").json())
