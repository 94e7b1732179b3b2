"""Trigger rules (shared by gateway and orchestrator), topic trigger windows and the continuous reader's
buffers: pure logic, explicit clocks, no Kafka."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pyarrow as pa
import pytest

from services.extract.streams import StreamBuffers, batch_id_for, rows_to_table
from services.gateway.app import create_app
from services.gateway.core import Gateway
from services.orchestrator.topic_triggers import WindowBook
from shared.avro.serde import AvroSerde
from shared.contracts import PipelineDefinition, PipelineRequest
from shared.spec import SpecError, parse_spec
from shared.spec.models import StreamFormat
from shared.streaming import StreamDecodeError, decode_event
from shared.triggers import (
    TopicTrigger,
    TriggerRule,
    TriggerWindow,
    WebhookTrigger,
    match_rules,
    split_definition_document,
    topic_run_id,
    webhook_rules_of,
)
from tests.unit.test_gateway_app import FakeBus, make_settings

pytestmark = pytest.mark.unit

SPEC = parse_spec(
    {
        "name": "hooked",
        "source": {"type": "event"},
        "destination": {"type": "jsonl", "path": "/tmp/out"},
    }
)
TOPIC = "orders.events"


# --------------------------------------------------------------------------------------------- rules
def test_webhook_rules_from_definitions_match_like_settings_rules():
    definition = PipelineDefinition(
        name="hooked",
        spec=SPEC,
        triggers=[
            WebhookTrigger(source="github", event="push", where={"ref": "refs/heads/main", "forced": False}),
            TopicTrigger(topic=TOPIC),
        ],
    )
    rules = [TriggerRule(source="github", definition="other", parameters={"sha": "after"})]
    rules += webhook_rules_of([definition])
    payload = {"ref": "refs/heads/main", "forced": False, "after": "abc"}
    matches = match_rules(rules, "github", "push", payload)
    assert [(m.definition, m.parameters) for m in matches] == [("other", {"sha": "abc"}), ("hooked", {})]
    assert [m.definition for m in match_rules(rules, "github", "push", {**payload, "forced": True})] == [
        "other"
    ]


def test_definition_documents_carry_triggers_beside_the_spec():
    spec_part, triggers = split_definition_document(
        {
            "name": "x",
            "triggers": [{"type": "topic", "topic": TOPIC, "window": {"events": 5, "seconds": 2}}],
        }
    )
    assert spec_part == {"name": "x"}
    assert triggers == [TopicTrigger(topic=TOPIC, window=TriggerWindow(events=5, seconds=2))]
    assert split_definition_document({"name": "x"}) == ({"name": "x"}, [])
    with pytest.raises(SpecError) as info:
        split_definition_document({"triggers": [{"type": "topic", "topic": TOPIC, "window": {"events": 0}}]})
    assert [i.path for i in info.value.issues] == ["triggers[0].topic.window.events"]


def test_topic_run_ids_are_deterministic_per_first_event():
    assert topic_run_id("d", TOPIC, 0, 5) == topic_run_id("d", TOPIC, 0, 5)
    assert (
        len({topic_run_id("d", TOPIC, 0, 5), topic_run_id("d", TOPIC, 1, 5), topic_run_id("e", TOPIC, 0, 5)})
        == 3
    )


# ------------------------------------------------------------------------------------------- windows
def test_a_window_closes_at_its_event_count_and_holds_back_its_first_offset():
    book = WindowBook(TopicTrigger(topic=TOPIC, window=TriggerWindow(events=3)))
    tp = (TOPIC, 0)
    book.add(tp, 10, None, 0, now=0.0)  # does not match: only advances the position
    book.add(tp, 11, {"n": 1}, 10, now=0.0)
    book.add(tp, 12, {"n": 2}, 10, now=0.0)
    assert book.closed == [] and book.offsets() == {tp: 11}, "the open window's first event stays uncommitted"
    book.add(tp, 13, {"n": 3}, 10, now=0.0)
    (window,) = book.closed
    assert (window.first_offset, [e["n"] for e in window.events]) == (11, [1, 2, 3])
    assert book.offsets() == {tp: 14}
    book.committed(book.offsets())
    assert book.closed == [] and book.held() == {tp: 14} and not book.uncommitted()


def test_a_window_closes_after_its_seconds_whichever_comes_first():
    book = WindowBook(TopicTrigger(topic=TOPIC, window=TriggerWindow(events=100, seconds=2.0)))
    book.add((TOPIC, 1), 0, {"n": 1}, 1, now=10.0)
    book.close_due(11.9)
    assert book.closed == [] and book.next_due() == 12.0
    book.close_due(12.0)
    assert [len(w.events) for w in book.closed] == [1]


def test_windows_are_forgotten_on_rewind_and_revocation():
    book = WindowBook(TopicTrigger(topic=TOPIC, window=TriggerWindow(events=1)))
    book.add((TOPIC, 0), 0, {"n": 1}, 1, now=0.0)
    book.add((TOPIC, 1), 0, {"n": 2}, 1, now=0.0)
    book.forget({(TOPIC, 0)})
    assert [w.partition for w in book.closed] == [1] and set(book.offsets()) == {(TOPIC, 1)}
    book.forget()
    assert book.closed == [] and book.offsets() == {}


def test_a_window_closes_early_rather_than_outgrow_a_request():
    book = WindowBook(TopicTrigger(topic=TOPIC, window=TriggerWindow(events=1000)), max_bytes=100)
    for offset in range(3):
        book.add((TOPIC, 0), offset, {"n": offset}, 40, now=0.0)
    assert [len(w.events) for w in book.closed] == [3]


# ------------------------------------------------------------------------------ continuous buffers
def test_stream_buffers_flush_at_linger_or_size_and_commit_past_unreadable_events():
    buffers = StreamBuffers(batch_rows=3, linger_s=0.2)
    buffers.add(("t", 0), 5, None, now=1.0)  # poison: no row, but its offset is consumed
    assert not buffers.due(1.0) and buffers.offsets() == {("t", 0): 6}
    buffers.add(("t", 0), 6, {"a": 1}, now=1.0)
    assert not buffers.due(1.1) and buffers.due(1.25)
    assert buffers.wait(1.05, ceiling=0.5) == pytest.approx(0.15)
    buffers.add(("t", 1), 0, {"a": 2}, now=1.1)
    buffers.add(("t", 1), 1, {"a": 3}, now=1.1)
    buffers.add(("t", 1), 2, {"a": 4}, now=1.1)
    assert buffers.due(1.1), "a full partition is due at once"
    assert buffers.held() == {("t", 0): 5, ("t", 1): 0}
    buffers.committed()
    assert buffers.held() == {("t", 0): 7, ("t", 1): 3} and not buffers.pending()
    assert batch_id_for("p", "t", 1, 0, 2) == "p:t:1:0-2"


def test_rows_disagreeing_on_a_type_travel_as_text_instead_of_being_lost():
    table = rows_to_table([{"id": 1, "v": 1}, {"id": 2, "v": "x"}, {"id": 3, "v": None}])
    assert table.column("v").to_pylist() == ["1", "x", None]
    assert rows_to_table([{"id": 1}]).schema.field("id").type == pa.int64()


def test_events_decode_as_json_objects_or_avro_records_and_poison_is_typed():
    serde = AvroSerde()
    assert decode_event(b'{"a": {"b": 1}}', StreamFormat.JSON, serde) == {"a": {"b": 1}}
    for bad in (b"[1, 2]", b"{not json", None):
        with pytest.raises(StreamDecodeError):
            decode_event(bad, StreamFormat.JSON, serde)
    request = PipelineRequest(run_id="r1", definition_name="d", parameters={"k": "v"})
    record = decode_event(serde.encode(request), StreamFormat.AVRO, serde)
    assert record["run_id"] == "r1" and record["parameters"] == {"k": "v"}
    json.dumps(record, default=str)
    with pytest.raises(StreamDecodeError):
        decode_event(b"\xc3\x01garbage", StreamFormat.AVRO, serde)


# ----------------------------------------------------------------------------------------- gateway
async def test_the_gateway_registers_triggers_and_matches_webhooks_by_definition_rules() -> None:
    bus = FakeBus()
    gateway = Gateway.in_memory(make_settings(triggers=[]), bus)  # no rule in the settings at all
    document = {
        "name": "on-tag",
        "source": {"type": "event"},
        "destination": {"type": "jsonl", "path": "/tmp/out"},
        "triggers": [
            {"type": "webhook", "source": "github", "event": "create", "where": {"ref_type": "tag"},
             "parameters": {"tag": "ref"}},
            {"type": "topic", "topic": TOPIC, "window": {"events": 0}},
        ],
    }  # fmt: skip
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        invalid = await client.put("/definitions/on-tag", json=document)
        assert invalid.status_code == 422
        assert "triggers[1].topic.window.events" in invalid.text
        document["triggers"] = document["triggers"][:1]  # type: ignore[index]
        created = await client.put("/definitions/on-tag", json=document)
        assert created.status_code == 201, created.text
        assert created.json()["triggers"][0]["source"] == "github"
        assert (await client.put("/definitions/on-tag", json=document)).json()["version"] == 1  # unchanged

        body = json.dumps({"ref": "v1.2", "ref_type": "tag"}).encode()
        digest = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
        headers = {
            "X-Hub-Signature-256": f"sha256={digest}",
            "X-GitHub-Delivery": "d-tag",
            "X-GitHub-Event": "create",
            "Content-Type": "application/json",
        }
        answer = await client.post("/webhooks/github", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    (request,) = bus.requests()
    assert (request.definition_name, request.parameters) == ("on-tag", {"tag": "v1.2"})
