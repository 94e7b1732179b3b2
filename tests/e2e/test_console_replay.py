"""An operator re-drives dead letters from the console, in a real headless Chromium, on the package's shared
system: a run (of the default tenant, which may write through the deployment's default PostgreSQL
connection) whose every batch fails at load (a wrong column type in the real
PostgreSQL table) fails with its batches dead-lettered; the run page lists them with a Replay button;
after the table is fixed, pressing each button (a CSRF-signed form, the session cookie) re-drives the
letter's original bytes through Kafka (the gateway reads the letter back from the dead-letters topic at
the position it followed it at) and the rows land in the table exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from selenium.webdriver.common.by import By

from shared.auth.keys import IssuedKey
from shared.contracts import DEFAULT_TENANT, Role, RunStatus
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import await_result
from tests.helpers import wait_until
from tests.integration.test_gateway import RunningGateway, seed_key, start_gateway
from tests.support.browser import chromium, signed_in, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def keys(system: System, kafka_bootstrap: str) -> dict[str, IssuedKey]:
    return {
        "admin": seed_key(kafka_bootstrap, system.suffix, Role.ADMIN, DEFAULT_TENANT),
        "operator": seed_key(kafka_bootstrap, system.suffix, Role.OPERATOR, DEFAULT_TENANT),
    }


@pytest.fixture
def gateway(system: System, kafka_bootstrap: str, keys: dict[str, IssuedKey]) -> Iterator[RunningGateway]:
    running = start_gateway(kafka_bootstrap, system.suffix, admin=keys["admin"])
    yield running
    running.stop()


ROWS: list[dict[str, Any]] = [{"id": n, "status": "paid" if n % 2 else "shipped"} for n in range(1, 31)]


def test_an_operator_replays_a_failed_run_s_dead_letters_from_the_console_and_they_load_once(
    system: System, gateway: RunningGateway, keys: dict[str, IssuedKey], postgres_dsn: str, tmp_path: Path
) -> None:
    table = f"console_replay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn) as con:  # a wrong column type: every batch fails at load
        con.execute(f"CREATE TABLE {table} (id bigint, status bigint)")
    spec = {
        "name": "console-replay",
        "source": {"type": "event"},
        "destination": {"type": "postgres", "table": table},
    }
    with (
        httpx.Client(base_url=gateway.url, headers=gateway.auth, timeout=15) as api,
        system.client.reader(Topics.RESULTS, from_beginning=False) as results,
        chromium() as browser,
    ):
        submitted = api.post("/runs", json={"spec": spec, "payload": ROWS})
        assert submitted.status_code == 202, submitted.text
        run_id = submitted.json()["run_id"]
        result = await_result(results, run_id)
        assert result.status is RunStatus.FAILED, result

        signed_in(browser, gateway.url, keys["operator"].token)
        run_page = f"{gateway.url}/ui/runs/{run_id}"

        def replay_buttons() -> list[str]:
            browser.get(run_page)
            rows = browser.find_elements(By.CSS_SELECTOR, "#dead-letters tr[data-dead-letter-id]")
            with_button = [r for r in rows if r.find_elements(By.CSS_SELECTOR, "button.replay")]
            return [str(r.get_attribute("data-dead-letter-id")) for r in with_button]

        letters = wait_until(replay_buttons, timeout=90, interval=1, message="replayable dead letters")

        with psycopg.connect(postgres_dsn) as con:  # the fix
            con.execute(f"ALTER TABLE {table} ALTER COLUMN status TYPE text")
        for letter in letters:
            browser.get(run_page)
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-dead-letter-id="{letter}"]')
            row.find_element(By.CSS_SELECTOR, "button.replay").click()
            done = wait_for(browser, lambda d: d.find_element(By.ID, "replayed"), what="the replay's answer")
            assert letter in done.text and system.suffix in done.text

    def loaded() -> int:
        with psycopg.connect(postgres_dsn) as con:
            row = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        assert row is not None and row[0] == row[1], "a row was applied twice"
        return int(row[0])

    wait_until(lambda: loaded() == len(ROWS), timeout=60, message="the re-driven batches loaded")
