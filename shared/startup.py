"""What every service builds before it handles its first message: its serde, from validated settings."""

from __future__ import annotations

from shared.avro import AvroSerde, SerdeSettings, make_serde
from shared.kafka.topics import Topics
from shared.settings import ServiceSettings, load_settings


def service_serde(settings: ServiceSettings) -> AvroSerde:
    """The Avro serde of a service: its wire format from ``AOETL_SCHEMA_REGISTRY_URL`` (validated here, a
    bad value is a ``ConfigurationError``), unknown writers resolved from the system's schemas topic on the
    service's own cluster, with its security settings."""
    serde_settings = load_settings(
        SerdeSettings, kafka=settings.kafka, schemas_topic=settings.topic(Topics.SCHEMAS)
    )
    return make_serde(serde_settings)
