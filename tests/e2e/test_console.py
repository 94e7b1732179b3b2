"""The web console in a real headless Chromium (Selenium), on the package's shared system (every service a
process on the real broker and PostgreSQL) with a gateway of its own: a person signs in with an API key,
watches a run of a registered definition appear on the runs list (server-sent events, no reload), opens
it, follows it to COMPLETED and reads each quality rule's numbers from the page; they are the
PipelineResult's (read from Kafka) and what the source rows say (counted here with the standard library).
The run's alert and the definition with its trigger show on their pages too.

With ``AOETL_UI_SCREENSHOTS=<folder>`` (``make screenshots``) it writes one PNG per page there.
The tenant, pipeline and run are this module's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from shared.auth.keys import IssuedKey
from shared.contracts import PipelineResult, Role
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import await_result
from tests.integration.test_gateway import RunningGateway, seed_key, start_gateway
from tests.support.browser import chromium, screenshot, signed_in, wait_for

pytestmark = pytest.mark.e2e

TENANT = "console-e2e"
PIPELINE = "console-orders"
LIMIT = 100
# amounts 1..160: the warn rule (amount <= 100) fails on the 60 above it, minus the quarantined rows
ROWS: list[dict[str, Any]] = [
    {"id": n, "customer": None if n % 40 == 0 else f"c{n % 7}", "amount": n} for n in range(1, 161)
]


@pytest.fixture
def keys(system: System, kafka_bootstrap: str) -> dict[str, IssuedKey]:
    return {
        "admin": seed_key(kafka_bootstrap, system.suffix, Role.ADMIN, TENANT),
        "operator": seed_key(kafka_bootstrap, system.suffix, Role.OPERATOR, TENANT),
    }


@pytest.fixture
def gateway(system: System, kafka_bootstrap: str, keys: dict[str, IssuedKey]) -> Iterator[RunningGateway]:
    running = start_gateway(kafka_bootstrap, system.suffix, admin=keys["admin"])
    yield running
    running.stop()


def definition(out: Path) -> dict[str, Any]:
    return {
        "name": PIPELINE,
        "source": {"type": "event"},
        "destination": {"type": "jsonl", "path": str(out)},
        "quality": [
            {"rule": "not_null", "columns": ["customer"], "on_fail": "quarantine", "name": "has-customer"},
            {"rule": "range", "column": "amount", "max": LIMIT, "on_fail": "warn", "name": "small-amount"},
        ],
        "triggers": [{"type": "webhook", "source": "github", "event": "push"}],
    }


def quality_on_page(driver: WebDriver) -> dict[str, tuple[int, int, str]]:
    """Each rule's (checked, failed, action) as the run page shows them."""
    shown = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#quality tbody tr"):
        checked = row.find_element(By.CSS_SELECTOR, "td.checked").get_attribute("data-value")
        failed = row.find_element(By.CSS_SELECTOR, "td.failed").get_attribute("data-value")
        action = row.find_element(By.CSS_SELECTOR, "td.action").text.strip()
        shown[str(row.get_attribute("data-rule"))] = (int(str(checked)), int(str(failed)), action)
    return shown


def test_the_console_follows_a_run_to_completed_and_shows_its_quality_numbers(
    system: System, gateway: RunningGateway, keys: dict[str, IssuedKey], tmp_path: Path
) -> None:
    shots = Path(os.environ["AOETL_UI_SCREENSHOTS"]) if os.environ.get("AOETL_UI_SCREENSHOTS") else None
    with (
        httpx.Client(base_url=gateway.url, headers=gateway.auth, timeout=15) as api,
        system.client.reader(Topics.RESULTS, from_beginning=False) as results,
        chromium() as browser,
    ):
        put = api.put(f"/definitions/{PIPELINE}", json=definition(tmp_path / "out"))
        assert put.status_code in (200, 201), put.text

        signed_in(browser, gateway.url, keys["operator"].token)
        assert "operator" in browser.find_element(By.ID, "who").text
        wait_for(browser, lambda d: d.find_element(By.ID, "run-count"), what="the runs list")

        submitted = api.post("/runs", json={"definition": PIPELINE, "payload": ROWS})
        assert submitted.status_code == 202, submitted.text
        run_id = submitted.json()["run_id"]
        # the open list learns of the run by its event stream: no reload
        link = wait_for(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{run_id}"] a'),
            timeout=60,
            what="the new run on the open runs list",
        )
        link.click()
        wait_for(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, ".live-body[data-final='true'] #run-status"),
            timeout=180,
            what="the run page to show the run's result",
        )
        status = browser.find_element(By.ID, "run-status").get_attribute("data-status")
        result = await_result(results, run_id)
        assert isinstance(result, PipelineResult)
        assert status == result.status.value == "COMPLETED", [e.message for e in result.errors]

        shown = quality_on_page(browser)
        expected = {o.rule: (o.rows_checked, o.rows_failed, o.action.value) for o in result.quality}
        assert shown == expected
        kept = [r for r in ROWS if r["customer"] is not None]
        too_big = [r for r in kept if r["amount"] > LIMIT]
        assert shown["small-amount"] == (len(kept), len(too_big), "WARNED")
        assert shown["has-customer"] == (len(ROWS), len(ROWS) - len(kept), "QUARANTINED")
        written = browser.find_element(By.ID, "written").text
        assert f"{len(kept):,} rows to jsonl" in written
        (outcome,) = result.written
        shown_bytes = browser.find_element(By.ID, "run-bytes").get_attribute("data-value")
        assert int(str(shown_bytes)) == outcome.bytes == api.get(f"/runs/{run_id}").json()["bytes_loaded"] > 0
        screenshot(browser, shots, "run")

        browser.get(f"{gateway.url}/ui/runs?pipeline={PIPELINE}")
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{run_id}"]')
        assert "COMPLETED" in row.text and PIPELINE in row.text
        screenshot(browser, shots, "runs")

        browser.get(f"{gateway.url}/ui/definitions")
        shown_definition = browser.find_element(By.CSS_SELECTOR, f'tr[data-definition="{PIPELINE}"]').text
        assert "webhook: source=github event=push" in shown_definition
        screenshot(browser, shots, "definitions")

        browser.get(f"{gateway.url}/ui/streams")
        screenshot(browser, shots, "streams")

        def alert_listed(driver: WebDriver) -> bool:  # the monitor's alert, read by the gateway
            driver.get(f"{gateway.url}/ui/alerts")
            return run_id in driver.find_element(By.ID, "alerts").text

        wait_for(browser, alert_listed, timeout=60, what="the run's quality alert on the alerts page")
        screenshot(browser, shots, "alerts")

        browser.get(f"{gateway.url}/ui/runs")
        browser.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
        wait_for(browser, lambda d: d.current_url.endswith("/ui/login"), what="signed out")
        screenshot(browser, shots, "login")
        browser.get(f"{gateway.url}/ui/runs/{run_id}")
        assert browser.current_url.endswith("/ui/login")  # the session is gone
