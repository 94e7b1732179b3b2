"""Pick the serde's wire format from the environment."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.avro.catalog import SchemaCatalog
from shared.avro.serde import AvroSerde


class SerdeSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    schema_registry_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AOETL_SCHEMA_REGISTRY_URL", "schema_registry_url"),
        description="Confluent Schema Registry URL; unset means single-object encoding (mock:// for tests)",
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="where the schemas topic lives, to resolve writer schemas the local catalog lacks",
    )


def make_serde(settings: SerdeSettings | None = None, *, catalog: SchemaCatalog | None = None) -> AvroSerde:
    settings = settings or SerdeSettings()
    if settings.schema_registry_url:
        from shared.avro.registry import RegistryFraming  # needs the schema-registry extras only here

        return AvroSerde(catalog, framing=RegistryFraming.from_url(settings.schema_registry_url))
    resolver = None
    if settings.kafka_bootstrap_servers:
        from shared.avro.schema_topic import SchemaTopicResolver

        resolver = SchemaTopicResolver(settings.kafka_bootstrap_servers)
    return AvroSerde(catalog, resolver=resolver)
