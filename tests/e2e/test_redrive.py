"""Dead letters re-driven after a fix land exactly once, however often they are replayed."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.commands.dlq import replay_letters
from shared.contracts import BatchLoaded, DeadLetter, EventKind, RunEvent, RunStatus, Stage
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import ORDER_STEPS, expected_orders, run_spec, write_orders
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e


def test_batches_failed_at_load_are_replayed_after_the_table_is_fixed_and_applied_once(
    system: System, tmp_path: Path, postgres_dsn: str
):
    rows = write_orders(tmp_path / "in", 6_000, files=2, seed=4)
    table = f"redrive_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn) as con:  # a wrong column type: every batch fails at load
        con.execute(
            f"CREATE TABLE {table} (id bigint, customer text, status bigint, amount double precision, "
            f"qty bigint, total double precision)"
        )
    spec = {
        "name": "redrive",
        "source": {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
        "transforms": ORDER_STEPS,
        "destination": {"type": "postgres", "table": table},
        "run": {"batch_rows": 1000},
    }
    with system.client.reader(Topics.DEAD_LETTERS, Topics.EVENTS, from_beginning=False) as reader:
        result = run_spec(system, spec)
        assert result.status is RunStatus.FAILED
        assert any("status" in e.message and "bigint" in e.message for e in result.errors), result.errors
        letters: dict[str, DeadLetter] = {}
        batches: set[str] = set()

        def every_failed_batch_dead_lettered() -> bool:
            for _, v in reader.poll({Topics.DEAD_LETTERS: DeadLetter, Topics.EVENTS: RunEvent}):
                if isinstance(v, DeadLetter) and v.run_id == result.run_id and v.stage is Stage.LOAD:
                    letters[v.dead_letter_id] = v
                if (
                    isinstance(v, RunEvent)
                    and v.run_id == result.run_id
                    and v.kind is EventKind.BATCH_TRANSFORMED
                ):
                    batches.add(v.batch_id or "")
            return len(batches) == 6 and len(letters) == len(batches)  # 2 files x 3 batches of 1000

        wait_until(every_failed_batch_dead_lettered, timeout=60, message="every batch dead-lettered at load")

    listed = CliRunner().invoke(app, ["dlq", "list", "--run", result.run_id], env=_cli_env(system))
    assert listed.exit_code == 0, listed.output
    assert f"{len(letters)} dead letter(s)" in listed.output

    with psycopg.connect(postgres_dsn) as con:  # the fix
        con.execute(f"ALTER TABLE {table} ALTER COLUMN status TYPE text")
    want = expected_orders(rows)

    def loaded() -> int:
        with psycopg.connect(postgres_dsn) as con:
            row = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        assert row is not None and row[0] == row[1], "a row was applied twice"
        return int(row[0])

    replay = CliRunner().invoke(
        app, ["dlq", "replay", "--run", result.run_id, "--stage", "load", "--yes"], env=_cli_env(system)
    )
    assert replay.exit_code == 0, replay.output
    wait_until(lambda: loaded() == want["count"], timeout=60, message="replayed batches loaded")
    replay_letters(system.client, list(letters.values()))  # a second replay must change nothing
    with system.client.reader(Topics.EVENTS, from_beginning=False) as events:
        replay_letters(system.client, list(letters.values()))
        seen: set[str] = set()

        def reapplied_as_no_ops() -> bool:
            for _, v in events.poll({Topics.EVENTS: RunEvent}):
                if isinstance(v, RunEvent) and v.run_id == result.run_id and v.kind is EventKind.BATCH_LOADED:
                    loaded = v.payload_as(BatchLoaded)
                    assert loaded is not None and not loaded.applied
                    seen.add(v.batch_id or "")
            return len(seen) == len(letters)

        wait_until(reapplied_as_no_ops, timeout=60, message="replays acknowledged as already applied")
    assert loaded() == want["count"]


def _cli_env(system: System) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": system.env["KAFKA_BOOTSTRAP_SERVERS"],
        "AOETL_TOPIC_SUFFIX": system.suffix,
        **system.cli_env,
    }
