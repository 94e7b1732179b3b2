"""Service settings: environment parsing, the plain KAFKA_BOOTSTRAP_SERVERS alias, secret redaction and
readable configuration errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.errors import ConfigurationError
from shared.settings import KafkaSettings, ProcessorSettings, ServiceSettings, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell (and CI) export these; each test states exactly what it sets.
    import os

    for name in list(os.environ):
        if name.startswith("AOETL_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


def test_defaults_are_safe_for_local_use() -> None:
    settings = load_settings(ServiceSettings)
    assert settings.http_host == "127.0.0.1"
    assert settings.log_format == "json"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.instance_id  # host-pid, never empty


def test_environment_is_parsed_with_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_HTTP_PORT", "0")
    monkeypatch.setenv("AOETL_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("AOETL_INSTANCE_ID", "pod-7")
    monkeypatch.setenv("AOETL_KAFKA_CLIENT_ID", "svc")
    monkeypatch.setenv("AOETL_GROUP_ID", "g1")
    monkeypatch.setenv("AOETL_RETRY_MAX_ATTEMPTS", "3")
    settings = load_settings(ProcessorSettings)
    assert (settings.http_port, settings.log_level, settings.instance_id) == (0, "DEBUG", "pod-7")
    assert settings.kafka.client_id == "svc"
    assert (settings.group_id, settings.retry_max_attempts) == ("g1", 3)


def test_bootstrap_servers_come_from_plain_kafka_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    assert load_settings(ServiceSettings).kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert KafkaSettings().to_confluent()["bootstrap.servers"] == "broker-a:9092,broker-b:9092"


def test_prefixed_bootstrap_variable_wins_over_the_plain_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "plain:1")
    monkeypatch.setenv("AOETL_KAFKA_BOOTSTRAP_SERVERS", "prefixed:2")
    assert KafkaSettings().bootstrap_servers == "prefixed:2"


def test_settings_are_frozen() -> None:
    settings = load_settings(ServiceSettings)
    with pytest.raises(ValidationError):
        settings.http_port = 1  # type: ignore[misc]


def test_secret_is_redacted_in_dump_and_repr_but_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("AOETL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("AOETL_KAFKA_SASL_USERNAME", "etl")
    monkeypatch.setenv("AOETL_KAFKA_SASL_PASSWORD", "hunter2")
    settings = load_settings(ServiceSettings)
    dumped = settings.redacted()
    assert dumped["kafka"]["sasl_password"] == "**********"
    assert "hunter2" not in json.dumps(dumped)
    assert "hunter2" not in repr(settings)
    confluent = settings.kafka.to_confluent()
    assert confluent["sasl.password"] == "hunter2"
    assert confluent["security.protocol"] == "sasl_ssl"
    assert confluent["sasl.mechanism"] == "SCRAM-SHA-512"
    aio = settings.kafka.to_aiokafka()
    assert aio["sasl_plain_password"] == "hunter2"
    assert aio["ssl_context"] is not None


def test_plaintext_config_carries_no_sasl_keys() -> None:
    assert not any(key.startswith("sasl") for key in KafkaSettings().to_confluent())


def test_invalid_values_name_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_HTTP_PORT", "70000")
    monkeypatch.setenv("AOETL_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(ServiceSettings)
    message = str(caught.value)
    assert "AOETL_HTTP_PORT: Input should be less than or equal to 65535" in message
    assert "AOETL_LOG_FORMAT: Input should be 'json' or 'text'" in message


def test_invalid_nested_kafka_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_KAFKA_SECURITY_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ConfigurationError, match="AOETL_KAFKA_SECURITY_PROTOCOL: Input should be"):
        load_settings(ServiceSettings)


def test_missing_required_value_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="AOETL_GROUP_ID: Field required"):
        load_settings(ProcessorSettings)


def test_topic_suffix_isolates_topic_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOETL_TOPIC_SUFFIX", ".t42")
    settings = load_settings(ServiceSettings)
    assert settings.topic("aoetl.tasks") == "aoetl.tasks.t42"
    assert settings.dead_letter_topic == "aoetl.deadletters.t42"


def test_bootstrap_servers_given_by_field_name_is_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("AOETL_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert KafkaSettings(bootstrap_servers="10.0.0.1:9092").bootstrap_servers == "10.0.0.1:9092"


def test_consumers_bound_their_prefetch_so_memory_does_not_grow_with_the_backlog() -> None:
    from services.load.configuration import LoadSettings
    from services.load.service import LoadService

    service = LoadService(LoadSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    overrides = service.loop_config().consumer_overrides
    assert overrides["queued.max.messages.kbytes"] == 8 * 1024
    # without a short backoff, a bounded queue would wait librdkafka's default 1 s before each refetch
    assert overrides["fetch.queue.backoff.ms"] <= 10

    tight = LoadService(
        LoadSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), consumer_prefetch_kib=2048)
    )
    assert tight.loop_config().consumer_overrides["queued.max.messages.kbytes"] == 2048


def test_data_plane_producers_do_not_compress_already_compressed_batches() -> None:
    from services.extract.configuration import ExtractSettings
    from services.transform.configuration import TransformSettings

    assert ExtractSettings().producer_compression == "none"
    assert TransformSettings().producer_compression == "none"
