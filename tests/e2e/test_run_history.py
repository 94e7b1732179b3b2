"""Issue 12, run history: every service a process on the real broker (the package's shared ``system``), the
monitor writing one summary per run to the compacted runs topic. ``aoetl runs list`` shows the runs with
the status and row counts of their results, filtered; re-publishing a finished run's events (as a
redelivery would) neither adds a record nor changes a count; and once the run's events and result are
deleted from their topics (``delete_records`` up to their end, as retention would), ``aoetl status``
still answers, from the summary, and says so.

Deleting the system's events and results removes earlier tests' records too: each test on the shared
system reads only its own runs, submitted after it started, so nothing later depends on them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from typer.testing import CliRunner

from aoetl.cli import app
from shared.contracts import (
    EventKind,
    PipelineResult,
    RunAccepted,
    RunEvent,
    RunFinished,
    RunStatus,
    RunSummary,
    Stage,
)
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.e2e.test_pipelines import assert_completed, orders_spec, run_spec, stage, write_orders
from tests.helpers import wait_until
from tests.support import secure_kafka

pytestmark = pytest.mark.e2e

SUMMARY_TIMEOUT = 60


def cli(system: System, kafka_bootstrap: str, *args: str) -> Any:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AOETL_TOPIC_SUFFIX": system.suffix,
        "COLUMNS": "250",
        **system.cli_env,
    }
    return CliRunner().invoke(app, list(args), env=env)


def listed(system: System, kafka_bootstrap: str, *filters: str) -> list[dict[str, Any]]:
    shown = cli(system, kafka_bootstrap, "runs", "list", *filters, "-o", "json")
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)


def summary_records(system: System, kafka_bootstrap: str, run_id: str) -> list[RunSummary]:
    """Every record of the run on the runs topic, in log order (before compaction: all of them)."""
    with system.client.reader(Topics.RUNS, from_beginning=True) as reader:
        return [
            v
            for _, v in reader.drain({Topics.RUNS: RunSummary})
            if isinstance(v, RunSummary) and v.run_id == run_id
        ]


def expected(result: PipelineResult) -> dict[str, Any]:
    transform, load = stage(result, Stage.TRANSFORM), stage(result, Stage.LOAD)
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "tenant": result.tenant,
        "status": result.status.value,
        "rows_extracted": stage(result, Stage.EXTRACT).rows_out,
        "rows_transformed": transform.rows_out,
        "rows_loaded": load.rows_out,
        "rows_rejected": transform.rows_rejected + load.rows_rejected,
        "batches_loaded": load.batches,
        # the JSONL sink knows its parts' sizes; the summary's bytes are the result's (a run without
        # batches: 0)
        "bytes_loaded": sum(w.bytes or 0 for w in result.written),
    }


SHOWN = ("run_id", "pipeline", "tenant", "status", "rows_extracted", "rows_transformed", "rows_loaded")
SHOWN_TOO = ("rows_rejected", "batches_loaded", "bytes_loaded")


def shown_as(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: entry[key] for key in (*SHOWN, *SHOWN_TOO)}


def await_listed(system: System, kafka_bootstrap: str, result: PipelineResult) -> dict[str, Any]:
    """The run's entry once its summary says it finished (the monitor writes it after the result)."""
    found: list[dict[str, Any]] = []

    def finished() -> bool:
        found[:] = [
            e for e in listed(system, kafka_bootstrap, "--pipeline", result.pipeline or "") if e["status"]
        ]
        return any(e["run_id"] == result.run_id for e in found)

    wait_until(finished, timeout=SUMMARY_TIMEOUT, message=f"run {result.run_id} finished in the run history")
    return next(e for e in found if e["run_id"] == result.run_id)


def test_runs_list_shows_each_run_once_with_its_results_status_and_counts(
    system: System, tmp_path: Path, kafka_bootstrap: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    good, bad = f"history-ok-{tag}", f"history-bad-{tag}"
    write_orders(tmp_path / "in", 3_000, files=2, seed=7)
    completed = [
        run_spec(
            system,
            orders_spec(
                good,
                {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
                {"type": "jsonl", "path": str(tmp_path / f"out{i}")},
            ),
        )
        for i in range(2)
    ]
    for result in completed:
        assert_completed(result)
    failed = run_spec(
        system,
        orders_spec(
            bad,
            {"type": "csv", "path": str(tmp_path / "nope-*.csv")},
            {"type": "jsonl", "path": str(tmp_path)},
        ),
    )
    assert failed.status is RunStatus.FAILED

    for result in (*completed, failed):
        entry = await_listed(system, kafka_bootstrap, result)
        assert shown_as(entry) == expected(result)
        assert entry["submitted_at"] and entry["finished_at"]
    assert entry["error"] and "nope" in entry["error"]["message"]  # the failed run's (the last one)

    ok = listed(system, kafka_bootstrap, "--pipeline", good)
    assert [e["run_id"] for e in ok] == [r.run_id for r in reversed(completed)], (
        "one entry each, newest first"
    )
    assert (
        listed(system, kafka_bootstrap, "--pipeline", good, "--limit", "1")[0]["run_id"]
        == completed[1].run_id
    )
    assert [
        e["run_id"] for e in listed(system, kafka_bootstrap, "--pipeline", bad, "--status", "FAILED")
    ] == [failed.run_id]
    assert listed(system, kafka_bootstrap, "--pipeline", bad, "--status", "COMPLETED") == []
    assert listed(system, kafka_bootstrap, "--pipeline", good, "--since", "2999-01-01") == []
    table = cli(system, kafka_bootstrap, "runs", "list", "--pipeline", bad)
    assert table.exit_code == 0 and failed.run_id in table.output and "FAILED" in table.output


def _ends(clients: KafkaClients, topic: str) -> dict[int, int]:
    consumer = clients.consumer(f"aoetl-watch-{uuid.uuid4().hex}")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


def test_a_redelivered_event_adds_no_entry_and_status_answers_from_the_summary_once_events_are_gone(
    system: System, tmp_path: Path, kafka_bootstrap: str
) -> None:
    name = f"history-gone-{uuid.uuid4().hex[:6]}"
    write_orders(tmp_path / "in", 2_000, files=1, seed=9)
    result = run_spec(
        system,
        orders_spec(
            name,
            {"type": "csv", "path": str(tmp_path / "in" / "*.csv")},
            {"type": "jsonl", "path": str(tmp_path / "out")},
        ),
    )
    assert_completed(result)
    entry = await_listed(system, kafka_bootstrap, result)
    records = summary_records(system, kafka_bootstrap, result.run_id)

    # redelivered: the run's events published again, as an at-least-once writer or a replay would
    operator = KafkaClients(secure_kafka.operator_settings(kafka_bootstrap))
    events_topic = Topics.EVENTS + system.suffix
    # the stages' events and the end (the orchestrator's planning events of a finished run stay out of it)
    again = [
        e
        for e in system.client.run_events(result.run_id)
        if e.stage is not Stage.ORCHESTRATE or e.kind is EventKind.RUN_FINISHED
    ]
    assert any(e.kind is EventKind.BATCH_LOADED for e in again)
    # Behind them, on the same partition, a sentinel: a run the monitor has not seen. Its RUN_ACCEPTED is
    # summarised at once, in one transaction with everything then pending on that partition (RunHistory
    # flushes all pending summaries on a new run), and the monitor reads a partition in order: once the
    # sentinel's summary is on the runs topic, whatever the redelivered events changed is there too.
    # (Not "the monitor's group committed past them": faust commits its offsets on its own schedule.)
    partitions: set[int] = set()

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        partitions.add(message.partition())

    producer = operator.producer()
    for event in again:
        producer.produce(
            events_topic, system.client.serde.encode(event), key=result.run_id, on_delivery=delivered
        )
    assert producer.flush(30) == 0 and len(partitions) == 1, "the events were published again"
    sentinel = uuid.uuid4().hex
    for kind, payload in (
        (EventKind.RUN_ACCEPTED, RunAccepted(pipeline=f"{name}-sentinel", stuck_after_s=3600)),
        (EventKind.RUN_FINISHED, RunFinished(status=RunStatus.COMPLETED)),
    ):
        marker = RunEvent(run_id=sentinel, kind=kind, stage=Stage.ORCHESTRATE, payload=payload)
        producer.produce(
            events_topic, system.client.serde.encode(marker), key=sentinel, partition=next(iter(partitions))
        )
    assert producer.flush(30) == 0
    wait_until(
        lambda: summary_records(system, kafka_bootstrap, sentinel),
        timeout=2 * SUMMARY_TIMEOUT,
        message="the monitor summarised the sentinel behind the redelivered events",
    )
    assert summary_records(system, kafka_bootstrap, result.run_id) == records, "no new record"
    assert listed(system, kafka_bootstrap, "--pipeline", name) == [entry]

    # the events and the result past their retention
    admin = operator.admin()
    for topic in (events_topic, Topics.RESULTS + system.suffix):
        ends = _ends(operator, topic)
        futures = admin.delete_records([TopicPartition(topic, p, end) for p, end in ends.items()])
        for future in futures.values():
            future.result(timeout=30)
    assert system.client.run_events(result.run_id) == []
    assert system.client.find_result(result.run_id) is None

    shown = cli(system, kafka_bootstrap, "status", result.run_id)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert f"run {result.run_id} ({name}): COMPLETED" in text
    assert "a summary from the run history" in text
    assert f"{stage(result, Stage.LOAD).rows_out:,}" in text
    as_json = cli(system, kafka_bootstrap, "status", result.run_id, "-o", "json")
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["source"] == "run history summary"
    assert shown_as(document) == expected(result)
