"""What every service does before it handles its first message: build its serde from validated settings,
and publish the writer schemas to the schemas topic.

Why publish at start-up: messages are Avro single-object encoded, so they name their writer schema only
by fingerprint, and the schemas topic (``aoetl.schemas`` plus the topic suffix, compacted, keyed by the
fingerprint's hex) is what turns a fingerprint into a schema for a consumer in any language. A service
therefore publishes before it produces anything.

What is published: the whole catalog, every current and historical schema, each the complete expanded
JSON (every referenced type inlined), so a decoder needs nothing but the one value. The whole catalog
rather than a per-service list because every service ships the same catalog, and a hand-kept list of
"what this service writes" would drift from the code (one forgotten entry is a message no outside
consumer can read); the history because messages from earlier writers may still be retained on the
topics. Publishing skips what the topic already holds (see ``shared.avro.schema_topic.publish_schemas``),
so a restart writes nothing; two replicas starting together may write the same key and value twice,
which compaction folds away. With Schema Registry framing nothing on the wire names a fingerprint, so
nothing is published (the registry is the schema source then).
"""

from __future__ import annotations

import logging

from shared.avro import AvroSerde, SerdeSettings, make_serde
from shared.avro.framing import SingleObjectFraming
from shared.avro.schema_topic import publish_schemas
from shared.errors import TransientError
from shared.kafka.topics import Topics
from shared.kafka.types import Serde
from shared.processing import RetryPolicy
from shared.settings import ServiceSettings, load_settings
from shared.signals import GracefulShutdown

_log = logging.getLogger(__name__)

_PUBLISH_RETRY = RetryPolicy(initial_delay=0.5, max_delay=10.0, max_attempts=None)


def service_serde(settings: ServiceSettings) -> AvroSerde:
    """The Avro serde of a service: its wire format from ``AOETL_SCHEMA_REGISTRY_URL`` (validated here, a
    bad value is a ``ConfigurationError``), unknown writers resolved from the system's schemas topic on the
    service's own cluster, with its security settings."""
    serde_settings = load_settings(
        SerdeSettings, kafka=settings.kafka, schemas_topic=settings.topic(Topics.SCHEMAS)
    )
    return make_serde(serde_settings)


def publish_writer_schemas(settings: ServiceSettings, serde: Serde, shutdown: GracefulShutdown) -> bool:
    """Publish the serde's catalog to the schemas topic, retrying until it succeeds; False if a stop was
    requested first. Serdes that do not name writers by fingerprint (registry framing, test doubles)
    publish nothing."""
    if not isinstance(serde, AvroSerde) or not isinstance(serde.framing, SingleObjectFraming):
        return True
    topic = settings.topic(Topics.SCHEMAS)
    attempt = 0
    while not shutdown.requested:
        try:
            written = publish_schemas(settings.kafka, catalog=serde.catalog, topic=topic)
        except TransientError as exc:  # the broker is not reachable yet: a service waits for it
            attempt += 1
            _log.warning("cannot publish the schemas to %s yet (%s); retrying", topic, exc)
            shutdown.wait(_PUBLISH_RETRY.delay(attempt))
            continue
        _log.info("schemas on %s: %d published, the rest already there", topic, written)
        return True
    return False
