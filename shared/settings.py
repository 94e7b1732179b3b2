"""Service settings from the environment (pydantic-settings), frozen once loaded.

Every service reads ``ServiceSettings`` (prefix ``AOETL_``) or a subclass of it, with the Kafka connection
nested as ``KafkaSettings`` (prefix ``AOETL_KAFKA_``; the bootstrap servers also come from the plain
``KAFKA_BOOTSTRAP_SERVERS`` that the dev stack, CI and the Avro serde use). ``load_settings`` turns a
pydantic ``ValidationError`` into a ``ConfigurationError`` that names the environment variables to fix.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, FilePath, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError
from shared.kafka.topics import Topics

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

S = TypeVar("S", bound=BaseSettings)


KafkaCompression = Literal["none", "lz4", "zstd", "snappy", "gzip"]


class KafkaSettings(BaseSettings):
    """How to reach the brokers. Client-specific tuning lives in ``shared/kafka/clients.py``."""

    # populate_by_name: KafkaSettings(bootstrap_servers=...) must not be silently ignored for the alias.
    model_config = SettingsConfigDict(
        env_prefix="AOETL_KAFKA_", frozen=True, extra="ignore", populate_by_name=True
    )

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("AOETL_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="comma-separated host:port list",
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: FilePath | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates; unset = system store"
    )
    client_id: str = "aoetl"

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the Python clients (aiokafka, faust), None without TLS: the CA file when set,
        else the system trust store (hostname checking on, as ``create_default_context`` does)."""
        if not self.uses_ssl:
            return None
        ca = str(self.ssl_ca_location) if self.ssl_ca_location is not None else None
        return ssl.create_default_context(cafile=ca)

    def to_confluent(self) -> dict[str, Any]:
        """librdkafka connection properties (dotted names)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
            "client.id": self.client_id,
        }
        if self.uses_ssl and self.ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                config["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                config["sasl.password"] = self.sasl_password.get_secret_value()
        return config

    def to_aiokafka(self) -> dict[str, Any]:
        """aiokafka constructor keyword arguments."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        context = self.ssl_context()
        if context is not None:
            # aiokafka needs an explicit context (it builds none from the protocol name alone).
            config["ssl_context"] = context
        if self.uses_sasl:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                config["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return config


def default_instance_id() -> str:
    """Unique per process on a host; set ``AOETL_INSTANCE_ID`` to a stable name (a StatefulSet pod name) in
    production so a restarted instance reuses its transactional id and fences its predecessor at once."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ServiceSettings(BaseSettings):
    """What every service needs. Services subclass it to add their group id and tunables."""

    model_config = SettingsConfigDict(env_prefix="AOETL_", frozen=True, extra="ignore")

    instance_id: str = Field(default_factory=default_instance_id)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port (see port_file)")
    port_file: Path | None = Field(None, description="the bound HTTP port is written here once listening")
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = "json"
    topic_suffix: str = Field(
        "", description="appended to every topic name; isolates a test run or a tenant on a shared broker"
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    def topic(self, name: str) -> str:
        """The actual topic for a logical name from ``Topics``."""
        return f"{name}{self.topic_suffix}"

    @property
    def dead_letter_topic(self) -> str:
        return self.topic(Topics.DEAD_LETTERS)

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe dump for logs: ``SecretStr`` values come out as ``**********``."""
        return self.model_dump(mode="json")


class ProcessorSettings(ServiceSettings):
    """A service built on the consume-process-produce loop (``shared.processing``)."""

    group_id: str = Field(..., min_length=1)
    max_batch: int = Field(500, ge=1, description="most messages taken per poll")
    # A poll's messages share a transaction until it has produced this much or been open this long
    # (shared.processing.budget): small messages share one, a large split commits alone. Both bind only
    # under a backlog (a poll holds what is there, and is handled in less): 10,000 concurrent 3-row runs
    # took 82.7 s with 100 messages and 0.1 s, 64.9 s with 500 and 0.5 s, the broker's CPU 38.7 -> 25.5 s
    # (bench/bench_concurrent.py), as more of them shared each transaction's fixed cost.
    transaction_max_bytes: int = Field(4 * 1024 * 1024, ge=1, description="bytes produced per transaction")
    transaction_max_s: float = Field(0.5, gt=0, description="seconds a transaction stays open for more")
    poll_timeout_s: float = Field(1.0, gt=0)
    kafka_timeout_s: float = Field(30.0, gt=0, description="bound on init/commit/abort calls")
    retry_initial_delay_s: float = Field(0.5, gt=0)
    retry_max_delay_s: float = Field(30.0, gt=0)
    retry_max_attempts: int | None = Field(
        20, ge=1, description="transient failures of one message before it is dead-lettered; unset = forever"
    )
    # How fast a crashed replica is noticed: its partitions move after the session timeout, and an open
    # transaction of a producer that never comes back blocks read_committed readers until it times out.
    session_timeout_ms: int = Field(45_000, ge=1_000, description="consumer group session timeout")
    producer_compression: KafkaCompression = Field(
        "lz4", description="Kafka batch compression of this service's producer"
    )
    # librdkafka prefetches up to 64 MiB of messages by default. A stage slower than its upstream keeps
    # that queue full, so its memory grew with the size of the run (load: 238 MiB at 1M rows, 336 MiB at
    # 5M). Bounded (8 MiB: 237 MiB at both sizes), a replica holds at most this much waiting input
    # whatever the backlog; one message is always fetched even when it is larger.
    consumer_prefetch_kib: int = Field(
        8 * 1024, ge=1024, description="most input a replica buffers ahead of processing, in KiB"
    )
    transaction_timeout_ms: int = Field(60_000, ge=1_000, description="Kafka transaction timeout")


class TransformingSettings(ProcessorSettings):
    """A processor that runs the transform stage (``shared.transform.batches``): the transform service,
    and the extract service when it chains the stage to its reads."""

    mask_salt: SecretStr = Field(
        SecretStr("aoetl-default-salt"),
        description="salt of mask(method=hash); set a secret one in production so hashes cannot be reversed",
    )


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment; a bad value becomes a ``ConfigurationError`` that lists every
    offending variable as ``ENV_VAR: reason``."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(_describe(cls, exc)) from exc


def _describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    # A nested settings class validates in its own default factory, so the error's title names the class
    # whose fields the locations refer to.
    owner = next((c for c in _settings_classes(cls) if c.__name__ == exc.title), cls)
    lines = [f"{_env_names(owner, err['loc'])}: {err['msg']}" for err in exc.errors()]
    return f"invalid {cls.__name__} settings:\n  " + "\n  ".join(lines)


def _settings_classes(cls: type[BaseSettings]) -> list[type[BaseSettings]]:
    found = [cls]
    for field in cls.model_fields.values():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            found.extend(_settings_classes(annotation))
    return found


def _env_names(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The variable(s) that feed the field at ``loc`` (the first element; deeper parts are JSON paths)."""
    if not loc:
        return "?"
    name = str(loc[0])
    field = cls.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices]
    elif isinstance(alias, str):
        names = [alias]
    else:
        prefix = str(cls.model_config.get("env_prefix", ""))
        names = [f"{prefix}{name}".upper()]
    suffix = "".join(f"[{part}]" for part in loc[1:])
    return " or ".join(names) + suffix
