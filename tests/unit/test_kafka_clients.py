"""Every Kafka client the system builds carries the security settings (SASL_SSL: mechanism, username,
password, CA file), whichever code path builds it.

The client classes in ``shared.kafka.clients`` (the one factory) are replaced by recorders that keep the
configuration each client is built with and answer as an empty cluster. Each call site below (the schema
resolver and publisher, topic admin, the Kafka sink, compacted views, the gateway bus, the monitor's admin,
lag probe and faust broker, the CLI's client, the dev stack's readiness check) must build its clients
through the factory (a client built any other way is not recorded, so its scenario fails) and every
client recorded must carry every security setting.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from pydantic import SecretStr

import shared.kafka.clients as clients_module
from aoetl.client import AoetlClient
from aoetl.devstack.kafka import kafka_ready
from services.gateway.bus import KafkaBus
from services.gateway.configuration import GatewaySettings
from services.gateway.deliveries import DeliveryBook
from services.gateway.state import DefinitionCatalog, RunLedger, RunView
from services.load.configuration import LoadSettings
from services.load.service import LoadService
from services.load.sinks import open_sink
from services.load.sinks.kafka_topic import KafkaSink
from services.monitor.cluster import faust_broker, input_partitions
from services.monitor.configuration import MonitorSettings
from services.monitor.exceptions import MonitorError
from services.monitor.lag import LagProbe
from shared.auth.keys import KeyRing
from shared.avro.schema_topic import SchemaTopicResolver, publish_schemas
from shared.contracts import PipelineDefinition
from shared.errors import ConfigurationError
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import (
    KafkaClients,
    make_aio_consumer,
    make_aio_producer,
    make_consumer,
    make_producer,
)
from shared.kafka.compacted import CompactedView
from shared.kafka.topics import Topics, TopicSpec
from shared.settings import KafkaSettings, ServiceSettings
from shared.spec.models import KafkaDestination
from shared.startup import service_serde

pytestmark = pytest.mark.unit

CA_FILE = Path(__file__).parent / "data" / "kafka-test-ca.pem"
CA_SUBJECT = "aoetl test CA (unit tests only)"
PASSWORD = "pa55-never-logged"
CONFLUENT = ("Producer", "Consumer", "AdminClient")
AIOKAFKA = ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient")


# ------------------------------------------------------------------------------------- recorders
class EmptyTopics(dict[str, Any]):
    """Topic metadata of an empty cluster: no topic exists, and asking for one gives no partitions."""

    def __missing__(self, topic: str) -> Any:
        return type("TopicMetadata", (), {"partitions": {}, "error": None})()


class Done:
    """Awaitable or not: what ``close`` returns, since one client kind awaits it and the others call it."""

    def __await__(self) -> Iterator[None]:
        return iter(())


class RecordedClient:
    """Stands in for any client kind: records its configuration, answers as an empty cluster."""

    def __init__(self, kind: str, config: dict[str, Any]):
        self.kind, self.config = kind, config

    # confluent-kafka
    def list_topics(self, *args: Any, **kw: Any) -> Any:
        return type("ClusterMetadata", (), {"topics": EmptyTopics(), "brokers": {}})()

    def create_topics(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return {}

    def produce(self, *args: Any, **kw: Any) -> None: ...

    def flush(self, *args: Any) -> int:
        return 0

    def poll(self, *args: Any) -> None: ...

    def assign(self, *args: Any) -> None: ...

    def close(self, *args: Any) -> Done:  # confluent's close is a call, aiokafka's admin an awaitable
        return Done()

    # aiokafka (the gateway bus's first read ends the scenario)
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return set()

    async def seek_to_beginning(self, *partitions: Any) -> None: ...

    async def offsets_for_times(self, wanted: dict[Any, int]) -> dict[Any, Any]:
        return {}

    async def end_offsets(self, partitions: Any) -> dict[Any, int]:
        return {}

    async def list_consumer_group_offsets(self, group: str) -> dict[Any, Any]:
        return {}

    async def getmany(self, **kw: Any) -> dict[Any, Any]:
        raise ScenarioDone


class ScenarioDone(Exception):
    """Raised by the first blocking read of a long-running call site: its clients are built by then."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[RecordedClient]:
    records: list[RecordedClient] = []

    def recorder(kind: str, aio: bool) -> Callable[..., RecordedClient]:
        def build(*args: Any, **kw: Any) -> RecordedClient:
            config = dict(kw) if aio else dict(args[0])
            records.append(RecordedClient(kind, config))
            return records[-1]

        return build

    for kind in CONFLUENT:
        monkeypatch.setattr(clients_module, kind, recorder(kind, aio=False))
    for kind in AIOKAFKA:
        monkeypatch.setattr(clients_module, kind, recorder(kind, aio=True))
    return records


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only what each test states: a developer's AOETL_*/KAFKA_* must not leak into the settings.
    for name in list(os.environ):
        if name.startswith("AOETL_") or name.startswith("KAFKA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def secure() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="broker-1:9093,broker-2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="etl",
        sasl_password=SecretStr(PASSWORD),
        ssl_ca_location=CA_FILE,
    )


# ------------------------------------------------------------------------------------- checks
def assert_trusts_only_the_test_ca(context: Any) -> None:
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(pair[0] for pair in cert["subject"]) for cert in context.get_ca_certs()]
    assert subjects == [{"commonName": CA_SUBJECT}]


def assert_secure(client: RecordedClient) -> None:
    config = client.config
    if client.kind in CONFLUENT:
        assert config["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
        assert config["security.protocol"] == "sasl_ssl"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "etl"
        assert config["sasl.password"] == PASSWORD
        assert config["ssl.ca.location"] == str(CA_FILE)
    else:
        assert config["bootstrap_servers"] == "broker-1:9093,broker-2:9093"
        assert config["security_protocol"] == "SASL_SSL"
        assert config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert config["sasl_plain_username"] == "etl"
        assert config["sasl_plain_password"] == PASSWORD
        assert_trusts_only_the_test_ca(config["ssl_context"])


# ------------------------------------------------------------------------------------- call sites
def kafka_sink(kafka: KafkaSettings) -> None:
    KafkaSink(KafkaDestination(topic="rows"), kafka)


def sink_factory(kafka: KafkaSettings) -> None:
    open_sink(KafkaDestination(topic="rows"), kafka=kafka)


def load_service_sink(kafka: KafkaSettings) -> None:
    # the whole wiring: service settings -> load worker -> sink factory -> Kafka sink
    service = LoadService(LoadSettings(kafka=kafka))
    service.worker.sink(KafkaDestination(topic="rows"))


def schema_resolver(kafka: KafkaSettings) -> None:
    SchemaTopicResolver(kafka).refresh()


def service_serde_resolver(kafka: KafkaSettings) -> None:
    serde = service_serde(ServiceSettings(kafka=kafka, topic_suffix=".t"))
    resolver = serde.framing.resolver  # type: ignore[attr-defined]
    assert resolver.topic == "aoetl.schemas.t"
    resolver.refresh()


def schema_publisher(kafka: KafkaSettings) -> None:
    assert publish_schemas(kafka, topic="aoetl.schemas.t") > 0  # nothing there yet: all of them written


def topic_admin(kafka: KafkaSettings) -> None:
    ensure_topics(kafka, [TopicSpec("aoetl.t", 1)])


def compacted_view(kafka: KafkaSettings) -> None:
    view = CompactedView(kafka, Topics.DEFINITIONS, PipelineDefinition, serde=None)  # type: ignore[arg-type]
    assert view.catch_up(timeout=1)
    view.stop()


def monitor_admin(kafka: KafkaSettings) -> None:
    with pytest.raises(MonitorError):  # the empty cluster has no input topics
        input_partitions(MonitorSettings(kafka=kafka))


def monitor_lag_probe(kafka: KafkaSettings) -> None:
    async def measure() -> None:
        probe = LagProbe(kafka, timeout_s=1)
        assert await probe.measure("aoetl-load") == {}
        await probe.close()

    asyncio.run(measure())


def gateway_bus(kafka: KafkaSettings) -> None:
    settings = GatewaySettings(kafka=kafka)
    bus = KafkaBus(
        settings,
        service_serde(settings),
        ledger=RunLedger(10),
        catalog=DefinitionCatalog(),
        runs=RunView(10),
        deliveries=DeliveryBook(3600, 10),
        keys=KeyRing(10.0),
    )
    with pytest.raises(ScenarioDone):
        asyncio.run(bus._run_once(asyncio.Event()))


def cli_client(kafka: KafkaSettings) -> None:
    client = AoetlClient(ServiceSettings(kafka=kafka))
    client.reader(Topics.RESULTS, from_beginning=True).close()
    client.close()


def devstack_readiness(kafka: KafkaSettings) -> None:
    assert not kafka_ready(kafka, timeout=1)  # the empty cluster has no broker


def factory_functions(kafka: KafkaSettings) -> None:
    make_producer(kafka)
    make_producer(kafka, transactional_id="tx-1")
    make_consumer(kafka, "group")
    make_aio_producer(kafka)
    make_aio_consumer(kafka, "topic", group_id=None)


def factory_methods(kafka: KafkaSettings) -> None:
    clients = KafkaClients(kafka)
    clients.producer()
    clients.transactional_producer("tx-1")
    clients.consumer("group", partition_eof=True)
    clients.admin()
    clients.aio_producer()
    clients.aio_consumer("topic", group_id="group")
    clients.aio_admin()


SCENARIOS: dict[str, tuple[Callable[[KafkaSettings], None], set[str]]] = {
    "kafka sink": (kafka_sink, {"Producer"}),
    "sink factory": (sink_factory, {"Producer"}),
    "load service sink": (load_service_sink, {"Producer"}),
    "schema resolver": (schema_resolver, {"Consumer"}),
    "service serde's resolver": (service_serde_resolver, {"Consumer"}),
    "schema publisher": (schema_publisher, {"Consumer", "Producer"}),
    "topic admin": (topic_admin, {"AdminClient"}),
    "compacted view": (compacted_view, {"Consumer"}),
    "monitor admin": (monitor_admin, {"AdminClient"}),
    "monitor lag probe": (monitor_lag_probe, {"AIOKafkaConsumer", "AIOKafkaAdminClient"}),
    "gateway bus": (gateway_bus, {"AIOKafkaProducer", "AIOKafkaConsumer"}),
    "cli client": (cli_client, {"Producer", "Consumer"}),
    "dev stack readiness": (devstack_readiness, {"AdminClient"}),
    "factory functions": (
        factory_functions,
        {"Producer", "Consumer", "AIOKafkaProducer", "AIOKafkaConsumer"},
    ),
    "factory methods": (factory_methods, set(CONFLUENT + AIOKAFKA)),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_client_of_the_call_site_carries_the_security_settings(
    scenario: str, built: list[RecordedClient], secure: KafkaSettings
) -> None:
    call, expected_kinds = SCENARIOS[scenario]
    call(secure)
    assert {client.kind for client in built} >= expected_kinds, f"{scenario} bypassed the factory"
    for client in built:
        assert_secure(client)


def test_transactional_producer_is_transactional_and_secure(
    built: list[RecordedClient], secure: KafkaSettings
) -> None:
    KafkaClients(secure).transactional_producer("load-0")
    [producer] = built
    assert producer.config["transactional.id"] == "load-0"
    assert producer.config["enable.idempotence"] is True
    assert_secure(producer)


def test_faust_broker_credentials_carry_sasl_and_the_ca(secure: KafkaSettings) -> None:
    conf = faust_broker(MonitorSettings(kafka=secure))
    assert conf["broker"] == ["kafka://broker-1:9093", "kafka://broker-2:9093"]
    credentials = conf["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("etl", PASSWORD)
    assert str(credentials.mechanism.value) == "SCRAM-SHA-512"
    assert_trusts_only_the_test_ca(credentials.ssl_context)


def test_faust_broker_over_tls_only_gets_ssl_credentials(secure: KafkaSettings) -> None:
    tls = secure.model_copy(update={"security_protocol": "SSL"})
    credentials = KafkaClients(tls).faust_broker()["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert_trusts_only_the_test_ca(credentials.context)


@pytest.mark.parametrize(
    "override",
    [{"sasl.password": ""}, {"security.protocol": "plaintext"}, {"bootstrap.servers": "elsewhere:9092"}],
)
def test_an_override_cannot_replace_a_connection_or_security_property(
    override: dict[str, Any], built: list[RecordedClient], secure: KafkaSettings
) -> None:
    with pytest.raises(ConfigurationError, match="come from KafkaSettings"):
        KafkaClients(secure).producer(**override)
    with pytest.raises(ConfigurationError, match="come from KafkaSettings"):
        KafkaClients(secure).aio_admin(sasl_plain_password="")
    assert built == []


def test_plaintext_settings_add_no_security_properties(built: list[RecordedClient]) -> None:
    clients = KafkaClients(KafkaSettings(bootstrap_servers="127.0.0.1:9092", ssl_ca_location=CA_FILE))
    clients.producer()
    clients.aio_admin()
    assert not any(key.startswith(("sasl", "ssl")) for client in built for key in client.config)
    assert "broker_credentials" not in clients.faust_broker()


def test_the_password_never_shows_in_a_repr_or_dump(secure: KafkaSettings) -> None:
    assert PASSWORD not in repr(KafkaClients(secure))
    assert PASSWORD not in repr(secure) and PASSWORD not in str(secure.model_dump(mode="json"))


def test_a_missing_ca_file_is_a_configuration_error() -> None:
    from shared.settings import load_settings

    with pytest.raises(ConfigurationError, match="AOETL_KAFKA_SSL_CA_LOCATION"):
        load_settings(KafkaSettings, ssl_ca_location="/nonexistent/ca.pem")


def test_librdkafka_refusing_a_property_is_a_configuration_error() -> None:
    # the real class: librdkafka checks properties when the client is created, without a broker
    with pytest.raises(ConfigurationError, match="Producer configuration refused"):
        KafkaClients(KafkaSettings(bootstrap_servers="127.0.0.1:1")).producer(**{"no.such.property": 1})


def test_transactional_producers_retry_a_busy_coordinator_within_milliseconds(
    built: list[RecordedClient], secure: KafkaSettings
) -> None:
    # CONCURRENT_TRANSACTIONS right after a commit clears in a few ms: waiting librdkafka's 100 ms for it
    # made every back-to-back transaction ~100 ms long (shared.kafka.clients' docstring)
    clients = KafkaClients(secure)
    clients.transactional_producer("extract-0")
    clients.producer()
    transactional, plain = built
    assert transactional.config["retry.backoff.ms"] <= 10
    assert transactional.config["retry.backoff.ms"] < transactional.config["retry.backoff.max.ms"] <= 100
    assert "retry.backoff.ms" not in plain.config  # an idempotent producer's retries keep the default


def test_librdkafka_takes_the_transactional_tuning() -> None:
    # the real class: a librdkafka without exponential retry backoff (< 2.3) would refuse the cap
    clients = KafkaClients(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    clients_module.Producer(clients.producer_config(transactional_id="t"))
