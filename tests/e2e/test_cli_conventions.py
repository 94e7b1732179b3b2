"""The CLI's look-before-you-change commands on the real stack: ``definitions apply --dry-run`` shows what
would change and writes nothing, ``definitions delete`` publishes the tombstone the gateway's DELETE does,
``dlq replay --dry-run`` lists what it would replay and publishes nothing; ``-o json`` on a listing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.commands.definitions import read_definitions
from shared.contracts import DeadLetter, ErrorInfo, Origin, Stage
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import make_consumer, make_producer
from shared.kafka.delivery import produce_sync
from shared.kafka.topics import Topics, TopicSpec
from tests.e2e.conftest import System
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e


def _env(system: System, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": system.env["KAFKA_BOOTSTRAP_SERVERS"],
        "AOETL_TOPIC_SUFFIX": system.suffix,
        "AOETL_CONFIG": str(tmp_path / "no-config.toml"),
        "AOETL_POLICY_DATA_ROOTS": json.dumps([str(tmp_path)]),
        "COLUMNS": "200",
        **system.cli_env,
    }


def test_apply_dry_run_shows_the_change_and_delete_removes_the_definition(
    system: System, tmp_path: Path
) -> None:
    name = f"cli-conv-{uuid.uuid4().hex[:8]}"
    (tmp_path / "in.csv").write_text("id,amount\n1,2.5\n")
    spec = {
        "name": name,
        "source": {"type": "csv", "path": "in.csv"},
        "transforms": [{"op": "cast", "columns": {"id": "int64"}}],
        "destination": {"type": "jsonl", "path": "out"},
    }
    file = tmp_path / f"{name}.yaml"
    file.write_text(json.dumps(spec))
    runner, env = CliRunner(), _env(system, tmp_path)

    def registered() -> dict[str, int]:
        return {n: d.version for n, d in read_definitions(system.client).items() if n == name}

    fresh = runner.invoke(app, ["definitions", "apply", str(file), "--dry-run"], env=env)
    assert fresh.exit_code == 0, fresh.output
    assert f"{name}: would be created as v1" in fresh.output and registered() == {}

    applied = runner.invoke(app, ["definitions", "apply", str(file)], env=env)
    assert applied.exit_code == 0 and f"{name} v1" in applied.output, applied.output
    same = runner.invoke(app, ["definitions", "apply", str(file), "--dry-run"], env=env)
    assert same.exit_code == 0 and f"{name} v1: unchanged" in same.output, same.output

    spec["transforms"].append({"op": "filter", "expr": "amount > 1"})
    file.write_text(json.dumps(spec))
    changed = runner.invoke(app, ["definitions", "apply", str(file), "--dry-run"], env=env)
    assert changed.exit_code == 0, changed.output
    assert f"{name}: would be updated v1 → v2" in changed.output
    assert "+  - op: filter" in changed.output and "+    expr: amount > 1" in changed.output, changed.output
    assert "nothing was written" in changed.output and registered() == {name: 1}
    # a dry run checks as validate does: a broken expression is refused with its path, nothing shown
    spec["transforms"][-1] = {"op": "filter", "expr": "amount >"}
    file.write_text(json.dumps(spec))
    broken = runner.invoke(app, ["definitions", "apply", str(file), "--dry-run"], env=env)
    assert broken.exit_code == 2 and "transforms[1].expr" in broken.output, broken.output

    declined = runner.invoke(app, ["definitions", "delete", name], env=env, input="n\n")
    assert declined.exit_code == 1 and registered() == {name: 1}, declined.output
    deleted = runner.invoke(app, ["definitions", "delete", name, "--yes"], env=env)
    assert deleted.exit_code == 0 and f"deleted {name}" in deleted.output, deleted.output
    assert registered() == {}  # the tombstone: read_definitions applies it as the services do
    listed = runner.invoke(app, ["definitions", "list", "-o", "json"], env=env)
    assert listed.exit_code == 0 and name not in {d["name"] for d in json.loads(listed.stdout)}
    again = runner.invoke(app, ["definitions", "delete", name, "--yes"], env=env)
    assert again.exit_code == 1 and "no definition named" in again.output, again.output


def test_dlq_replay_dry_run_lists_the_letters_and_publishes_nothing(system: System, tmp_path: Path) -> None:
    run_id = f"cli-dlq-{uuid.uuid4().hex[:8]}"
    origin = f"cli-dlq-origin-{uuid.uuid4().hex[:8]}{system.suffix}"
    # the test's own setup is the operator's: the origin topic, and the dead letter (the data stages write
    # dead letters; on a secured broker the cli user may only read them)
    operator = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
    ensure_topics(operator, [TopicSpec(origin, 1, {}, "")])
    letter = DeadLetter(
        origin=Origin(topic=origin, partition=0, offset=0, key=b"k"),
        stage=Stage.LOAD,
        error=ErrorInfo(error_class="CastError", message="a test letter"),
        run_id=run_id,
        payload=b"original bytes",
    )
    dead_letters = system.client.topic(Topics.DEAD_LETTERS)
    produce_sync(make_producer(operator), dead_letters, system.client.serde.encode(letter), run_id)

    shown = CliRunner().invoke(
        app, ["dlq", "replay", "--run", run_id, "--dry-run", "-o", "json"], env=_env(system, tmp_path)
    )
    assert shown.exit_code == 0, shown.output
    listed = json.loads(shown.stdout)
    assert [(d["dead_letter_id"], d["origin"]["topic"]) for d in listed] == [(letter.dead_letter_id, origin)]
    table = CliRunner().invoke(
        app, ["dlq", "replay", "--run", run_id, "--dry-run"], env=_env(system, tmp_path)
    )
    assert table.exit_code == 0 and "1 dead letter(s) would be replayed" in table.output, table.output
    consumer = make_consumer(operator, f"cli-dlq-{uuid.uuid4().hex}")  # the origin topic is not the cli's
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(origin, 0), timeout=15)
    finally:
        consumer.close()
    assert (low, high) == (0, 0)  # nothing was re-published to the origin topic
