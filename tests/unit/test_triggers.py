"""Trigger rules (shared by gateway and orchestrator), topic trigger windows and the continuous reader's
buffers: pure logic, explicit clocks, no Kafka."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pyarrow as pa
import pytest

from services.extract.streams import batch_id_for, rows_to_table
from services.gateway.app import create_app
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
from tests.unit.gateway_support import ADMIN, GITHUB_SECRET, FakeBus, bearer, make_gateway

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


# ------------------------------------------------------------------------------ continuous batches
def test_continuous_batch_ids_name_their_offsets():
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


def test_json_events_decode_exactly_as_the_json_module_reads_them():
    serde = AvroSerde()
    # what the fast parser refuses but json reads (non-standard numbers, huge ints, lone surrogates)
    for raw in (
        b'{"id": 1, "amount": 2.5, "user": "u\\u00e9", "tags": [1, null, true], "n": {"x": -0.0}}',
        b'{"a": NaN, "b": Infinity, "c": -Infinity}',
        b'{"big": 123456789012345678901234567890, "tiny": 1e-400, "huge": 1e400}',
        b'{"s": "\\ud800"}',
        b'{"dup": 1, "dup": 2}',
    ):
        got = decode_event(raw, StreamFormat.JSON, serde)
        assert repr(got) == repr(json.loads(raw)), raw  # repr: NaN != NaN
    for bad in (b'{"a": 1', b'\xff{"a": 1}', b"", b'"text"', b"1"):
        with pytest.raises(StreamDecodeError):
            decode_event(bad, StreamFormat.JSON, serde)


# ----------------------------------------------------------------------------------------- gateway
async def test_the_gateway_registers_triggers_and_matches_webhooks_by_definition_rules() -> None:
    bus = FakeBus()
    gateway = make_gateway(bus, triggers=[])  # no rule in the settings at all
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
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=bearer(ADMIN)
    ) as client:
        invalid = await client.put("/definitions/on-tag", json=document)
        assert invalid.status_code == 422
        assert "triggers[1].topic.window.events" in invalid.text
        document["triggers"] = document["triggers"][:1]  # type: ignore[index]
        created = await client.put("/definitions/on-tag", json=document)
        assert created.status_code == 201, created.text
        assert created.json()["triggers"][0]["source"] == "github"
        assert (await client.put("/definitions/on-tag", json=document)).json()["version"] == 1  # unchanged

        body = json.dumps({"ref": "v1.2", "ref_type": "tag"}).encode()
        digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
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
