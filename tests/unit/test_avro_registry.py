"""Schema Registry mode, against confluent_kafka's own in-memory ``MockSchemaRegistryClient`` (no real
registry runs here): 5-byte framing, register on encode, fetch by id on decode, and mode selection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from shared.avro.catalog import SchemaCatalog
from shared.avro.errors import NotSingleObjectError, TruncatedMessageError, UnknownFingerprintError
from shared.avro.factory import SerdeSettings, make_serde
from shared.avro.framing import SingleObjectFraming
from shared.avro.registry import RegistryFraming
from shared.avro.schema_topic import SchemaTopicResolver
from shared.avro.serde import AvroSerde
from shared.contracts import EventKind, RunEvent, Stage

pytestmark = pytest.mark.unit

EVENT = RunEvent(
    run_id="r", kind=EventKind.RUN_FINISHED, stage=Stage.ORCHESTRATE, at=datetime(2026, 1, 1, tzinfo=UTC)
)


@pytest.fixture
def client() -> SchemaRegistryClient:
    client = SchemaRegistryClient.new_client({"url": "mock://aoetl-test"})
    assert type(client).__name__ == "MockSchemaRegistryClient"
    return client


def test_framing_registers_and_resolves_by_id(client: SchemaRegistryClient) -> None:
    producer = AvroSerde(framing=RegistryFraming(client))
    data = producer.encode(EVENT)
    schema_id = int.from_bytes(data[1:5], "big")
    assert data[0] == 0
    registered = client.get_latest_version(RunEvent.avro_name)  # RecordNameStrategy subject
    assert registered.schema_id == schema_id
    # another process: empty local catalog, the writer schema comes from the registry by id
    consumer = AvroSerde(SchemaCatalog(), framing=RegistryFraming(client))
    assert consumer.decode(data, RunEvent) == EVENT
    assert producer.encode(EVENT) == data  # registered once, id cached


def test_framing_errors(client: SchemaRegistryClient) -> None:
    serde = AvroSerde(framing=RegistryFraming(client))
    data = serde.encode(EVENT)
    with pytest.raises(NotSingleObjectError):
        serde.decode(AvroSerde().encode(EVENT), RunEvent)  # single-object bytes are not registry framed
    with pytest.raises(TruncatedMessageError):
        serde.decode(data[:3], RunEvent)
    with pytest.raises(UnknownFingerprintError):
        serde.decode(b"\x00\x00\x00\x30\x39" + data[5:], RunEvent)


def test_factory_picks_the_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOETL_SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    plain = AvroSerde.from_settings()
    assert isinstance(plain.framing, SingleObjectFraming)
    assert isinstance(plain.framing.resolver, SchemaTopicResolver)

    monkeypatch.setenv("AOETL_SCHEMA_REGISTRY_URL", "mock://factory")
    registry = AvroSerde.from_settings()
    assert isinstance(registry.framing, RegistryFraming)
    assert registry.decode(registry.encode(EVENT), RunEvent) == EVENT

    explicit = make_serde(SerdeSettings(schema_registry_url=None, kafka=None))
    assert isinstance(explicit.framing, SingleObjectFraming) and explicit.framing.resolver is None
