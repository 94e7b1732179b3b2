"""Pick the serde's wire format, and where unknown writer schemas are looked up, from settings.

With ``AOETL_SCHEMA_REGISTRY_URL`` the serde frames messages for a Confluent Schema Registry. Otherwise it
writes Avro single-object encoding and resolves writer schemas its catalog lacks from the schemas topic,
read with a client built from the service's ``KafkaSettings`` (so with its SASL/TLS settings).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.avro.catalog import SchemaCatalog
from shared.avro.serde import AvroSerde
from shared.kafka.topics import Topics
from shared.settings import KafkaSettings


def _kafka_if_configured() -> KafkaSettings | None:
    """The environment's Kafka settings when it names a broker at all (a serde built for a file-only tool
    must not go looking for a schemas topic on a default localhost)."""
    kafka = KafkaSettings()
    return kafka if "bootstrap_servers" in kafka.model_fields_set else None


class SerdeSettings(BaseSettings):
    # The prefix keeps the nested ``kafka`` field from reading a bare ``KAFKA`` variable; the registry URL has
    # its own name.
    model_config = SettingsConfigDict(
        env_prefix="AOETL_SERDE_", extra="ignore", populate_by_name=True, frozen=True
    )

    schema_registry_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AOETL_SCHEMA_REGISTRY_URL", "schema_registry_url"),
        description="Confluent Schema Registry URL; unset means single-object encoding (mock:// for tests)",
    )
    kafka: KafkaSettings | None = Field(
        default_factory=_kafka_if_configured,
        description="the cluster of the schemas topic, to resolve writer schemas the local catalog lacks",
    )
    schemas_topic: str = Field(Topics.SCHEMAS, description="the schemas topic (with the topic suffix)")

    @property
    def uses_schemas_topic(self) -> bool:
        """True when messages name their writer by fingerprint, which the schemas topic resolves."""
        return not self.schema_registry_url


def make_serde(settings: SerdeSettings | None = None, *, catalog: SchemaCatalog | None = None) -> AvroSerde:
    settings = settings or SerdeSettings()
    if settings.schema_registry_url:
        from shared.avro.registry import RegistryFraming  # needs the schema-registry extras only here

        return AvroSerde(catalog, framing=RegistryFraming.from_url(settings.schema_registry_url))
    resolver = None
    if settings.kafka is not None:
        from shared.avro.schema_topic import SchemaTopicResolver

        resolver = SchemaTopicResolver(settings.kafka, topic=settings.schemas_topic)
    return AvroSerde(catalog, resolver=resolver)
