"""Webhook -> run -> result, end to end: a signed Stripe-style delivery to the gateway starts the
registered definition whose source is the event itself; a replay of the delivery starts nothing more."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aoetl.devstack.osproc import free_port
from shared.contracts import PipelineResult
from shared.kafka.topics import Topics
from shared.webhooks.signatures import sign_stripe
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import (
    ORDER_STEPS,
    assert_completed,
    await_result,
    duckdb_figures,
    expected_orders,
    write_orders,
)
from tests.helpers import wait_until
from tests.integration.test_gateway import seed_key

pytestmark = pytest.mark.e2e

SECRET = "whsec_e2e-test-secret-of-32-bytes"


@dataclass
class Gateway:
    api: str
    admin: dict[str, str]  # an admin's Authorization header
    definition: str  # the definition its trigger starts: a name of this test's own


@pytest.fixture
def gateway(system: System) -> Iterator[Gateway]:
    """A gateway on the shared system with the billing webhook and its trigger, stopped after the test."""
    api_port = free_port()
    definition = f"webhook-orders-{uuid.uuid4().hex[:6]}"
    admin = {
        "Authorization": f"Bearer {seed_key(system.env['KAFKA_BOOTSTRAP_SERVERS'], system.suffix).token}"
    }
    started = system.supervisor.start(
        "gateway",
        1,
        env={
            "AOETL_API_PORT": str(api_port),
            "AOETL_AUTH_API_KEYS": "true",
            "AOETL_WEBHOOKS": json.dumps({"billing": {"scheme": "stripe", "secrets": [SECRET]}}),
            "AOETL_TRIGGERS": json.dumps(
                [
                    {
                        "source": "billing",
                        "event": "orders.exported",
                        "definition": definition,
                        "parameters": {"batch": "data.batch"},
                    }
                ]
            ),
        },
    )
    try:
        system.supervisor.wait_ready(started, timeout=60)
        yield Gateway(f"http://127.0.0.1:{api_port}", admin, definition)
    finally:
        system.supervisor.stop("gateway")


def test_signed_webhook_starts_its_pipeline_once_and_loads_the_records_it_carries(
    system: System, gateway: Gateway, tmp_path: Path
):
    api, admin, name = gateway.api, gateway.admin, gateway.definition
    db = tmp_path / "hooks.duckdb"
    definition = {
        "name": name,
        "source": {"type": "event", "records_path": "data.orders"},
        "transforms": ORDER_STEPS,
        "destination": {"type": "duckdb", "path": str(db), "table": "orders"},
    }
    assert httpx.put(f"{api}/definitions/{name}", json=definition, headers=admin, timeout=10).status_code in (
        200,
        201,
    )
    wait_until(
        lambda: httpx.get(f"{api}/definitions/{name}", headers=admin, timeout=5).status_code == 200,
        30,
        message="definition visible",
    )

    rows = write_orders(tmp_path / "in", 1_200, files=1, seed=17)
    body = json.dumps(
        {"id": f"evt_{uuid.uuid4().hex}", "type": "orders.exported", "data": {"batch": "b-7", "orders": rows}}
    ).encode()
    headers = {"Content-Type": "application/json", **sign_stripe(body, SECRET)}
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        first = httpx.post(f"{api}/webhooks/billing", content=body, headers=headers, timeout=30)
        assert first.status_code == 202, first.text
        run_id = first.json()["run_id"]
        result = await_result(reader, run_id)
        again = httpx.post(f"{api}/webhooks/billing", content=body, headers=headers, timeout=30)
        assert (
            again.status_code == 200
            and again.json()["duplicate"] is True
            and again.json()["run_id"] == run_id
        )
        tampered = httpx.post(f"{api}/webhooks/billing", content=body + b" ", headers=headers, timeout=30)
        assert tampered.status_code == 401
    assert_completed(result)
    assert result.pipeline == name
    assert duckdb_figures(db, "orders") == expected_orders(rows)
    wait_until(
        lambda: (
            httpx.get(f"{api}/runs/{run_id}", headers=admin, timeout=5).json().get("status") == "COMPLETED"
        ),
        30,
        message="run view",
    )
    # exactly one result for the run, whatever the replays
    with system.client.reader(Topics.RESULTS, from_beginning=True) as everything:
        results = [v for _, v in everything.drain({Topics.RESULTS: PipelineResult}) if v.run_id == run_id]  # type: ignore[attr-defined]
    assert len(results) == 1
