"""What the console's pages show, in process over the fake bus: hostile text (pipeline names, error texts,
alert messages, failing values: anyone's) is escaped everywhere and a registered secret is masked; a run's
quality outcomes are the PipelineResult v3 figures, and the fold's while it runs; 10,000 runs page on the
server; the event stream names the tenant's changed runs only; definitions show their triggers, continuous
runs their readers' reported backlog."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.gateway.core import Gateway
from services.gateway.state import RunView
from services.gateway.ui.events import run_changes
from shared.contracts import (
    Alert,
    AlertKind,
    BatchLoaded,
    ConsumerLag,
    ErrorInfo,
    EventKind,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    QualityViolation,
    RuleAction,
    RuleOutcome,
    RunAccepted,
    RunEvent,
    RunStatus,
    Severity,
    Stage,
    StageStats,
    StreamProgress,
    WriteOutcome,
)
from shared.kafka.topics import Topics
from shared.redaction import forget_all_secrets, register_secret
from shared.spec import parse_spec
from shared.spec.models import OnFail
from shared.triggers import TopicTrigger
from tests.unit.gateway_support import OTHER_ADMIN, TENANT, VIEWER, FakeBus
from tests.unit.test_gateway_ui import RUN_ID, SPEC, T0, add_letter, add_run, browser, bus, gateway, sign_in

pytestmark = pytest.mark.unit
__all__ = ["browser", "bus", "gateway"]  # the fixtures of test_gateway_ui, shared

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


def assert_escaped(page: str) -> None:
    assert "<script>alert" not in page and "<img src=x" not in page
    assert ESCAPED in page


def result(run_id: str, **fields: Any) -> PipelineResult:
    values: dict[str, Any] = {
        "run_id": run_id,
        "request_id": "q",
        "pipeline": "orders",
        "tenant": TENANT,
        "status": RunStatus.COMPLETED,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=3),
    }
    return PipelineResult(**{**values, **fields})


# ----------------------------------------------------------------------------------------- escaping
async def test_hostile_pipeline_names_errors_messages_and_values_are_escaped_on_every_page(
    gateway: Gateway, bus: FakeBus, browser: httpx.AsyncClient
) -> None:
    gateway.runs.on_request(PipelineRequest(run_id="hostile", definition_name=HOSTILE, tenant=TENANT))
    gateway.runs.on_result(
        result(
            "hostile",
            pipeline=HOSTILE,
            status=RunStatus.FAILED,
            errors=[ErrorInfo(error_class="X", message=HOSTILE, path=HOSTILE)],
            decisions=[HOSTILE],
            quality=[
                RuleOutcome(
                    rule=HOSTILE, rows_checked=3, rows_failed=1, action=RuleAction.WARNED, samples=[HOSTILE]
                )
            ],
            written=[WriteOutcome(destination="jsonl", target=HOSTILE, rows=2)],
        )
    )
    add_letter(gateway, bus, "hostile", "hostile-letter", message=HOSTILE)
    alert = Alert(
        kind=AlertKind.RUN_FAILED,
        severity=Severity.CRITICAL,
        message=HOSTILE,
        run_id="hostile",
        tenant=TENANT,
    )
    gateway.records.on_alert(alert, gateway.runs.tenant_of)
    await sign_in(browser, VIEWER)
    for path in ("/ui/runs", "/ui/runs/hostile", "/ui/runs/hostile?fragment=true", "/ui/alerts"):
        page = await browser.get(path)
        assert page.status_code == 200, path
        assert_escaped(page.text)
        assert "default-src 'none'" in page.headers["content-security-policy"]
    detail = (await browser.get("/ui/runs/hostile")).text
    assert detail.count(ESCAPED) >= 7  # pipeline, error, decision, rule, sample, target, dead letter, alert


async def test_a_registered_secret_in_an_error_never_reaches_a_page(
    gateway: Gateway, bus: FakeBus, browser: httpx.AsyncClient
) -> None:
    secret = "pg-password-0f9a8b7c"
    add_run(gateway, "leaky", TENANT)
    gateway.runs.on_result(
        result("leaky", status=RunStatus.FAILED, errors=[ErrorInfo(error_class="E", message="x")])
    )
    register_secret(secret)
    try:
        # texts written before the secret was registered (another process's): the page masks them again
        view = gateway.runs.get("leaky")
        assert view is not None and view.result is not None
        gateway.runs.on_result(
            result("leaky", status=RunStatus.FAILED, decisions=[f"retried with password={secret}"])
        )
        add_letter(gateway, bus, "leaky", "leaky-letter", message="x")
        await sign_in(browser, VIEWER)
        page = await browser.get("/ui/runs/leaky")
        assert page.status_code == 200 and secret not in page.text and "***" in page.text
    finally:
        forget_all_secrets()


# ----------------------------------------------------------------------------------------- quality
async def test_the_run_page_shows_the_result_s_quality_outcomes_per_rule(
    gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    gateway.runs.on_result(
        result(
            RUN_ID,
            stages=[
                StageStats(stage=Stage.TRANSFORM, rows_in=4000, rows_out=3100, batches=4, duration_ms=2000)
            ],
            quality=[
                RuleOutcome(
                    rule="small-amount",
                    columns=["amount"],
                    rows_checked=3100,
                    rows_failed=2480,
                    action=RuleAction.WARNED,
                    samples=["250.0", "499.5"],
                ),
                RuleOutcome(rule="has-customer", rows_checked=4000, action=RuleAction.PASSED),
            ],
            written=[WriteOutcome(destination="duckdb", target="/tmp/w.duckdb:orders", rows=3100)],
        )
    )
    await sign_in(browser, VIEWER)
    page = (await browser.get(f"/ui/runs/{RUN_ID}")).text
    assert 'data-status="COMPLETED"' in page and 'data-final="true"' in page
    row = page.split('data-rule="small-amount"')[1].split("</tr>")[0]
    assert 'data-value="3100"' in row and 'data-value="2480"' in row and "80.0%" in row and "WARNED" in row
    assert "250.0, 499.5" in row
    assert "3,100 rows to duckdb /tmp/w.duckdb:orders" in page
    assert "1,550/s" in page  # transform: 3,100 rows out in 2 s of busy time
    assert 'id="run-bytes" data-value=""' in page and "not reported (the sink cannot say)" in page  # DuckDB


async def test_a_running_run_shows_the_fold_s_quality_so_far(
    gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    def event(kind: EventKind, **fields: Any) -> RunEvent:
        return RunEvent(**{"run_id": RUN_ID, "kind": kind, "stage": Stage.TRANSFORM, "at": T0, **fields})

    gateway.runs.on_event(
        event(
            EventKind.RUN_ACCEPTED,
            stage=Stage.ORCHESTRATE,
            payload=RunAccepted(pipeline="orders", tenant=TENANT),
        )
    )
    violation = QualityViolation(rule="small-amount", on_fail=OnFail.WARN, reason="too big", failed_rows=7)
    gateway.runs.on_event(event(EventKind.QUALITY_VIOLATION, batch_id="b1", payload=violation))
    gateway.runs.on_event(event(EventKind.BATCH_TRANSFORMED, batch_id="b1", rows_in=10, rows_out=10))
    loaded = BatchLoaded(applied=True, bytes=2048)
    gateway.runs.on_event(
        event(EventKind.BATCH_LOADED, stage=Stage.LOAD, batch_id="b1", rows_out=10, payload=loaded)
    )
    await sign_in(browser, VIEWER)
    page = (await browser.get(f"/ui/runs/{RUN_ID}")).text
    assert 'id="run-bytes" data-value="2048">2,048</dd>' in page
    assert "(so far)" in page and 'data-final="false"' in page and 'data-status="RUNNING"' in page
    row = page.split('data-rule="small-amount"')[1].split("</tr>")[0]
    assert 'data-value="10"' in row and 'data-value="7"' in row and "WARNED" in row


# -------------------------------------------------------------------------------------- pagination
async def test_ten_thousand_runs_page_on_the_server(gateway: Gateway, browser: httpx.AsyncClient) -> None:
    for n in range(9_999):  # with the fixture's run: 10,000, as many as the view keeps (runs_capacity)
        add_run(gateway, f"bulk-{n:05d}", TENANT, minutes=n + 1)
    gateway.runs.on_result(result("bulk-09997", status=RunStatus.FAILED))
    await sign_in(browser, VIEWER)
    started = time.perf_counter()
    first = await browser.get("/ui/runs")
    took = time.perf_counter() - started
    assert first.status_code == 200
    assert "10,000 run(s) · page 1 of 200" in first.text
    assert first.text.count("data-run-id=") == 50
    assert first.text.index("bulk-09998") < first.text.index("bulk-09949")  # newest first
    assert "bulk-09948" not in first.text
    assert took < 3.0, f"the first page of 10,000 runs took {took:.2f}s"
    last = (await browser.get("/ui/runs?page=200")).text
    assert last.count("data-run-id=") == 50 and RUN_ID in last and "bulk-00048" in last
    assert 'rel="next"' not in last and "bulk-00049" not in last
    middle = (await browser.get("/ui/runs?page=100")).text
    assert "bulk-05048" in middle and "bulk-04999" in middle and "bulk-04998" not in middle
    assert 'href="/ui/runs?page=99"' in middle and 'href="/ui/runs?page=101"' in middle
    beyond = await browser.get("/ui/runs?page=5000")  # past the end: the last page
    assert "page 200 of 200" in beyond.text
    failed = (await browser.get("/ui/runs?status=FAILED")).text
    assert "1 run(s)" in failed and "bulk-09997" in failed and "bulk-09998" not in failed
    filtered = (await browser.get("/ui/runs?status=FAILED&page=1")).text
    assert 'rel="next"' not in filtered
    assert "0 run(s)" in (await browser.get("/ui/runs?pipeline=nope")).text


# ---------------------------------------------------------------------------------------- live
class Connected:
    """The part of a request ``run_changes`` uses: it stays connected."""

    async def is_disconnected(self) -> bool:
        return False


async def test_the_event_stream_names_the_tenant_s_changed_runs_only() -> None:
    runs = RunView(100)
    runs.on_request(PipelineRequest(run_id="before", spec=SPEC, tenant=TENANT))
    stream = run_changes(Connected(), runs, TENANT, None, stream_s=5.0)  # type: ignore[arg-type]
    assert (await anext(stream)).startswith("retry: ")
    runs.on_request(PipelineRequest(run_id="theirs", spec=SPEC, tenant=OTHER_ADMIN.record.tenant))
    runs.on_request(PipelineRequest(run_id="mine", spec=SPEC, tenant=TENANT))
    assert await anext(stream) == 'event: runs\ndata: {"runs": ["mine"]}\n\n'
    runs.on_event(RunEvent(run_id="before", kind=EventKind.TASK_STARTED, stage=Stage.EXTRACT, at=T0))
    assert await anext(stream) == 'event: runs\ndata: {"runs": ["before"]}\n\n'
    await stream.aclose()

    one = run_changes(Connected(), runs, TENANT, "mine", stream_s=5.0)  # type: ignore[arg-type]
    await anext(one)
    runs.on_event(RunEvent(run_id="before", kind=EventKind.TASK_STARTED, stage=Stage.EXTRACT, at=T0))
    runs.on_event(RunEvent(run_id="mine", kind=EventKind.TASK_STARTED, stage=Stage.EXTRACT, at=T0))
    assert await anext(one) == 'event: runs\ndata: {"runs": ["mine"]}\n\n'
    await one.aclose()


async def test_the_event_stream_ends_by_itself_for_the_browser_to_reconnect() -> None:
    stream = run_changes(Connected(), RunView(10), TENANT, None, stream_s=0.2)  # type: ignore[arg-type]
    assert [line async for line in stream] == ["retry: 1000\n: connected\n\n"]


async def test_pages_carry_their_live_part_and_event_stream(
    gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, VIEWER)
    runs = (await browser.get("/ui/runs?status=RUNNING")).text
    assert 'data-events-url="/ui/events"' in runs and "fragment=true" in runs
    detail = (await browser.get(f"/ui/runs/{RUN_ID}")).text
    assert f'data-events-url="/ui/events?run={RUN_ID}"' in detail
    script = await browser.get("/ui/static/console.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert (await browser.get("/ui/static/..%2Fsession.py")).status_code == 404
    events = await browser.get(f"/ui/events?run={RUN_ID}")
    assert events.headers["content-type"].startswith("text/event-stream") and "retry:" in events.text


# ------------------------------------------------------------------------- definitions, streams
async def test_definitions_show_their_triggers_and_streams_their_backlog(
    gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    continuous = parse_spec(
        {
            "name": "clicks",
            "source": {"type": "kafka", "topic": "clicks", "format": "json"},
            "destination": {"type": "jsonl", "path": "/tmp/clicks"},
        }
    )
    trigger = TopicTrigger(topic="orders-events", where={"kind": "paid"})
    gateway.catalog.apply(
        "clicks", PipelineDefinition(name="clicks", spec=continuous, tenant=TENANT, triggers=[trigger])
    )
    gateway.catalog.apply("repo-sync", PipelineDefinition(name="repo-sync", spec=SPEC, tenant=TENANT))
    gateway.runs.on_event(
        RunEvent(
            run_id="stream-1",
            kind=EventKind.RUN_ACCEPTED,
            stage=Stage.ORCHESTRATE,
            at=T0,
            payload=RunAccepted(pipeline="clicks", tenant=TENANT, continuous=True),
        )
    )
    for partition, lag in ((0, 120), (1, 5)):
        progress = StreamProgress(topic="clicks", partition=partition, first_offset=0, last_offset=9, lag=lag)
        gateway.runs.on_event(
            RunEvent(
                run_id="stream-1",
                kind=EventKind.STREAM_PROGRESS,
                stage=Stage.EXTRACT,
                at=T0,
                batch_id=f"b{partition}",
                rows_out=10,
                payload=progress,
            )
        )
    await sign_in(browser, VIEWER)
    definitions = (await browser.get("/ui/definitions")).text
    row = definitions.split('data-definition="clicks"')[1].split("</tr>")[0]
    assert "continuous" in row and "topic: topic=orders-events" in row and "kind" in row
    repo_sync = definitions.split('data-definition="repo-sync"')[1].split("</tr>")[0]
    assert "webhook (gateway rule)" in repo_sync and "source=github" in repo_sync  # the settings' rule
    streams = (await browser.get("/ui/streams")).text
    row = streams.split('data-run-id="stream-1"')[1].split("</tr>")[0]
    assert ">125" in row and "clicks[0] 120" in row and "clicks[1] 5" in row and ">20<" in row
    assert "not measured" in row  # the monitor does not watch the stream's group (yet)
    assert streams.count("not measured") == 4  # nor any stage's
    # the monitor's measurements, as the lag topic brings them (ConsumerLag, key group)
    topic = gateway.settings.topic
    for group, topics in (
        ("aoetl-stream.clicks", {"clicks": 130}),
        ("aoetl-transform", {topic(Topics.DATA_EXTRACTED): 7}),
        ("aoetl-load", {topic(Topics.DATA_TRANSFORMED): 0, "elsewhere": 99}),
    ):
        gateway.records.on_lag(ConsumerLag(group=topic(group), topics=topics, at=T0))
    streams = (await browser.get("/ui/streams")).text
    row = streams.split('data-run-id="stream-1"')[1].split("</tr>")[0]
    assert '<td class="n measured-lag">130' in row
    stages = {
        stage: streams.split(f'<tr data-stage="{stage}">')[1].split("</tr>")[0]
        for stage in ("extract", "transform", "load")
    }
    assert "not measured" in stages["extract"] and topic(Topics.TASKS) in stages["extract"]
    assert 'data-value="7"' in stages["transform"] and topic("aoetl-transform") in stages["transform"]
    assert 'data-value="0"' in stages["load"]  # its own input only, not the group's other topics
    other = await browser.get("/ui/streams", headers={"Authorization": f"Bearer {OTHER_ADMIN.token}"})
    assert "stream-1" not in other.text
