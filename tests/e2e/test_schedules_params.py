"""Schedules and parameters on the real stack.

* Parameters: a registered definition with ``${params.*}`` in its source path, a filter value and its
  destination runs with the request's parameters, and its result shows them; a request missing one is
  REJECTED with the field's path.
* Schedules: a definition scheduled every minute on a system of its own with two orchestrator replicas
  whose schedule clock runs ahead (``AOETL_SCHEDULE_CLOCK_OFFSET_S``: the first tick is due at once, no
  waiting for the minute); the tick runs once. Both replicas are then stopped and restarted four minutes
  further ahead (as after an outage): with ``missed: all`` every missed tick runs, each exactly once (one
  result per tick run id, every request handled), and the tick fired before the restart is not fired
  again (its state came back from the schedules topic).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from shared.contracts import PipelineDefinition, PipelineRequest, RunStatus, TriggerKind
from shared.kafka.clients import make_consumer
from shared.kafka.topics import Topics
from shared.schedules import schedule_run_id
from shared.spec import parse_spec
from shared.triggers import split_definition_document
from tests.e2e.conftest import System, group_env, running_system
from tests.e2e.test_pipelines import assert_completed, await_result, open_duckdb_when_unlocked
from tests.e2e.test_streaming import read_all, register, results_of
from tests.helpers import wait_until
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e


def write_sales(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{i},{'eu' if i % 3 else 'us'},{i * 1.5}" for i in range(30)]
    path.write_text("id,region,amount\n" + "\n".join(rows) + "\n")


# ------------------------------------------------------------------------------------ parameters
def test_a_definition_runs_with_the_parameters_of_its_request(system: System, tmp_path: Path) -> None:
    write_sales(tmp_path / "in" / "2026-03-01.csv")
    name = register(
        system,
        {
            "name": f"params-{uuid.uuid4().hex[:6]}",
            "source": {"type": "csv", "path": f"{tmp_path}/in/${{params.day}}.csv"},
            "transforms": [{"op": "filter", "expr": "region = ${params.region:-eu}"}],
            "destination": {
                "type": "duckdb",
                "path": f"{tmp_path}/out-${{params.day}}.duckdb",
                "table": "sales",
            },
        },
    )
    with system.client.reader(Topics.RESULTS, from_beginning=False) as reader:
        missing = system.client.submit(definition_name=name, parameters={"region": "us"})
        refused = await_result(reader, missing.run_id)
        ran = system.client.submit(definition_name=name, parameters={"day": "2026-03-01", "region": "us"})
        result = await_result(reader, ran.run_id)
    assert_completed(result)
    assert result.parameters == {"day": "2026-03-01", "region": "us"}
    with open_duckdb_when_unlocked(tmp_path / "out-2026-03-01.duckdb") as con:
        regions = con.execute("SELECT region, count(*) FROM sales GROUP BY region").fetchall()
    assert regions == [("us", 10)]  # the filter took the parameter's value
    assert refused.status is RunStatus.REJECTED
    assert {(e.path, e.error_class) for e in refused.errors} == {
        ("spec.source.path", "ParameterError"),
        ("spec.destination.path", "ParameterError"),
    }


# ------------------------------------------------------------------------------------- schedules
def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _requests_handled(system: System) -> bool:
    """The orchestrators' group has committed past every request on the shared topic: each was answered (a
    run, a rejection, or nothing for a duplicate) in the transaction that committed it, so a second result
    for a tick would already be on the results topic. (Offsets are compared message by message: a
    transaction's commit marker takes an offset of its own, so the end offset itself proves nothing.)"""
    kafka = secure_kafka.operator_settings(system.env["KAFKA_BOOTSTRAP_SERVERS"])
    group = group_env(system.env["KAFKA_BOOTSTRAP_SERVERS"], "orchestrator", system.suffix)["AOETL_GROUP_ID"]
    topic = Topics.REQUESTS + system.suffix
    probe = make_consumer(kafka, group)
    reader = make_consumer(kafka, f"probe-{uuid.uuid4().hex}", partition_eof=True)
    try:
        partitions = list(probe.list_topics(topic, timeout=10).topics[topic].partitions)
        committed = {tp.partition: tp.offset for tp in probe.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=10)}  # fmt: skip
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_partitions, last = set(partitions), {p: -1 for p in partitions}
        deadline = time.monotonic() + 30
        while open_partitions and time.monotonic() < deadline:
            for message in reader.consume(500, 0.5):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition() or 0)
                elif error is None:
                    last[message.partition() or 0] = message.offset() or 0
        return not open_partitions and all(committed[p] > last[p] for p in partitions if last[p] >= 0)
    finally:
        reader.close()
        probe.close()


def test_a_schedule_fires_each_tick_once_across_replicas_and_a_restart(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    replicas = {"orchestrator": 2, "extract": 1, "transform": 1, "load": 1}
    ahead = {"AOETL_SCHEDULE_CLOCK_OFFSET_S": "60"}
    with running_system(kafka_bootstrap, postgres_dsn, replicas, ahead) as system:
        write_sales(tmp_path / "in.csv")
        name = f"minutely-{uuid.uuid4().hex[:6]}"
        spec_part, triggers = split_definition_document(
            {
                "name": name,
                "source": {"type": "csv", "path": str(tmp_path / "in.csv")},
                "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
                "triggers": [{"type": "schedule", "cron": "* * * * *", "missed": "all", "max_catch_up": 10}],
            }
        )
        definition = PipelineDefinition(name=name, spec=parse_spec(spec_part), triggers=triggers)
        system.client.publish(Topics.DEFINITIONS, name, definition)
        # its first tick is the first minute after it was defined, due at once with the clock 60 s ahead
        first_tick = _minute(definition.updated_at) + timedelta(minutes=1)
        first_run = schedule_run_id(name, 0, first_tick)
        with system.client.reader(Topics.RESULTS, from_beginning=True) as reader:
            assert_completed(await_result(reader, first_run))

        # an outage: both replicas stop; they come back four minutes further ahead
        system.supervisor.stop("orchestrator")
        env = {
            **group_env(kafka_bootstrap, "orchestrator", system.suffix),
            "AOETL_SCHEDULE_CLOCK_OFFSET_S": "300",
        }
        system.supervisor.wait_ready(system.supervisor.start("orchestrator", 2, env=env), timeout=90)
        caught_up_to = _minute(datetime.now(UTC) + timedelta(seconds=300))
        expected = []
        tick = first_tick
        while tick <= caught_up_to:
            expected.append(schedule_run_id(name, 0, tick))
            tick += timedelta(minutes=1)
        assert len(expected) >= 5  # the first tick and at least four missed ones

        def every_tick_finished() -> bool:
            done = {r.run_id for r in results_of(system, name)}
            return set(expected) <= done

        wait_until(every_tick_finished, 240, interval=2.0, message="a result for every missed tick")
        wait_until(lambda: _requests_handled(system), 60, message="every request handled")

        results = results_of(system, name)
        per_run = Counter(r.run_id for r in results)
        assert all(count == 1 for count in per_run.values()), per_run  # exactly once per tick
        assert all(r.status is RunStatus.COMPLETED for r in results), [(r.run_id, r.errors) for r in results]
        ticks_run = sorted(per_run)
        # every run is one of this schedule's minutes, from the first tick on: no gap, nothing foreign
        minutes = {
            schedule_run_id(name, 0, first_tick + timedelta(minutes=i)) for i in range(len(ticks_run) + 2)
        }
        assert set(ticks_run) <= minutes and set(expected) <= set(ticks_run)
        requests = read_all(system, Topics.REQUESTS, PipelineRequest, lambda r: r.definition_name == name)
        assert all(r.trigger.kind is TriggerKind.SCHEDULE for r in requests)
        # fired before the outage, recorded in the schedules topic: not fired again after the restart
        assert [r.run_id for r in requests].count(first_run) == 1
