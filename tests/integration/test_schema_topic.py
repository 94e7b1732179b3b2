"""Writer schemas resolved from Kafka alone: publish to a schemas topic, then a serde with an EMPTY local
catalog decodes by fingerprint through ``SchemaTopicResolver``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from shared.avro.catalog import SchemaCatalog
from shared.avro.errors import UnknownFingerprintError
from shared.avro.framing import MAGIC
from shared.avro.schema_topic import SchemaTopicResolver, publish_schemas
from shared.avro.serde import AvroSerde
from shared.contracts import ErrorInfo, EventKind, RunEvent, Stage
from shared.kafka.admin import ensure_topics
from shared.kafka.topics import TopicSpec
from shared.settings import KafkaSettings
from tests.integration.test_contracts_kafka import consume, produce_all

pytestmark = pytest.mark.integration

AT = datetime(2026, 5, 6, 7, 8, 9, 123_000, tzinfo=UTC)
EVENT = RunEvent(
    run_id="r1",
    kind=EventKind.TASK_FAILED,
    stage=Stage.LOAD,
    at=AT,
    error=ErrorInfo(error_class="E", message="m"),
)


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex
    schemas, data = f"test.schemas.{suffix}", f"test.data.{suffix}"
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    ensure_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        [TopicSpec(schemas, 1, compacted), TopicSpec(data, 1)],
    )
    yield schemas, data
    AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([schemas, data])


def test_fresh_serde_decodes_from_kafka_alone(kafka_bootstrap: str, topics: tuple[str, str]) -> None:
    schemas_topic, data_topic = topics
    catalog = SchemaCatalog.default()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    resolver = SchemaTopicResolver(kafka, topic=schemas_topic)
    resolver.refresh()
    assert len(resolver) == 0  # subscribed before anything was published

    assert publish_schemas(kafka, topic=schemas_topic) == len(list(catalog.all_entries()))
    assert publish_schemas(kafka, topic=schemas_topic) == 0  # idempotent

    v1 = catalog.history(RunEvent.avro_name)[0]
    old = {k: v for k, v in AvroSerde().decode_record(AvroSerde().encode(EVENT)).items() if k != "instance"}
    old_message = AvroSerde(SchemaCatalog([v1])).encode_record(RunEvent.avro_name, old)
    produce_all(kafka_bootstrap, data_topic, [AvroSerde().encode(EVENT), old_message])
    current, previous = (m.value() or b"" for m in consume(kafka_bootstrap, data_topic, 2))

    fresh = AvroSerde(SchemaCatalog(), resolver=resolver)  # knows no schema at all
    assert fresh.decode(current, RunEvent) == EVENT  # the miss triggers one refresh of the topic
    assert fresh.decode_record(current)["error"] == {
        "error_class": "E",
        "message": "m",
        "transient": False,
        "path": None,
    }
    assert fresh.decode(previous, RunEvent) == EVENT  # v1 writer found too; the model fills `instance`
    assert "instance" not in fresh.decode_record(previous)
    with pytest.raises(UnknownFingerprintError):
        fresh.decode(MAGIC + bytes(8) + current[10:], RunEvent)


def test_resolver_skips_records_that_do_not_match_their_key(
    kafka_bootstrap: str, topics: tuple[str, str]
) -> None:
    schemas_topic, _ = topics
    entry = SchemaCatalog.default().entry(RunEvent.avro_name)
    other = SchemaCatalog.default().entry("io.aoetl.Alert")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(
        schemas_topic, key=entry.fingerprint.hex(), value=json.dumps(other.json).encode()
    )  # lies
    producer.produce(schemas_topic, key=other.fingerprint.hex(), value=b"{not json")
    producer.produce(schemas_topic, key=other.fingerprint.hex(), value=json.dumps(other.json).encode())
    assert producer.flush(30) == 0
    resolver = SchemaTopicResolver(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic=schemas_topic)
    resolver.refresh()
    assert resolver.lookup(entry.fingerprint) is None
    found = resolver.lookup(other.fingerprint)
    assert found is not None and found.name == "io.aoetl.Alert"
