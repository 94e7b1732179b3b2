"""What every service does before it handles its first message: build its serde from validated settings,
check that the cluster accepts its credentials, and publish the writer schemas to the schemas topic.

Why check the credentials first: a refused password or an untrusted broker certificate looks like a broker
outage to the Kafka clients, which would retry it forever; ``await_kafka_access`` turns it into a
configuration error (the service exits 2 at once, saying what was refused) and waits only for a broker
that does not answer at all (see ``shared.kafka.access``).

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

Cold start: the CLI builds its serde with ``service_serde`` too, so this module imports no more than that
needs; the retry policy (``shared.processing``, which brings the task loop and prometheus) is imported by
the two waiting functions, which only services call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.avro import AvroSerde, SerdeSettings, make_serde
from shared.avro.framing import SingleObjectFraming
from shared.avro.schema_topic import publish_schemas
from shared.errors import TransientError
from shared.kafka.access import check_access
from shared.kafka.topics import Topics
from shared.kafka.types import Serde
from shared.settings import ServiceSettings, load_settings
from shared.signals import GracefulShutdown

if TYPE_CHECKING:
    from shared.processing import RetryPolicy

_log = logging.getLogger(__name__)


def _start_up_retry() -> RetryPolicy:
    """How a service waits for the broker at start-up: from half a second up to ten, for ever."""
    from shared.processing import RetryPolicy  # cold start: services only, not the CLI (see the docstring)

    return RetryPolicy(initial_delay=0.5, max_delay=10.0, max_attempts=None)


def service_serde(settings: ServiceSettings) -> AvroSerde:
    """The Avro serde of a service: its wire format from ``AOETL_SCHEMA_REGISTRY_URL`` (validated here, a
    bad value is a ``ConfigurationError``), unknown writers resolved from the system's schemas topic on the
    service's own cluster, with its security settings."""
    serde_settings = load_settings(
        SerdeSettings, kafka=settings.kafka, schemas_topic=settings.topic(Topics.SCHEMAS)
    )
    return make_serde(serde_settings)


def await_kafka_access(settings: ServiceSettings, shutdown: GracefulShutdown) -> bool:
    """Wait until the cluster answers as this service's principal and lets it use the schemas topic; False
    if a stop was requested first. Refused credentials, an untrusted certificate or ACLs that do not cover
    the schemas topic raise ``KafkaAccessDeniedError`` (a ``ConfigurationError``)."""
    retry = _start_up_retry()
    attempt = 0
    while not shutdown.requested:
        try:
            check_access(settings.kafka, [settings.topic(Topics.SCHEMAS)])
        except TransientError as exc:
            attempt += 1
            _log.warning("Kafka is not reachable yet (%s); retrying", exc)
            shutdown.wait(retry.delay(attempt))
            continue
        return True
    return False


def publish_writer_schemas(settings: ServiceSettings, serde: Serde, shutdown: GracefulShutdown) -> bool:
    """Publish the serde's catalog to the schemas topic, retrying until it succeeds; False if a stop was
    requested first. Serdes that do not name writers by fingerprint (registry framing, test doubles)
    publish nothing."""
    if not isinstance(serde, AvroSerde) or not isinstance(serde.framing, SingleObjectFraming):
        return True
    topic = settings.topic(Topics.SCHEMAS)
    retry = _start_up_retry()
    attempt = 0
    while not shutdown.requested:
        try:
            written = publish_schemas(settings.kafka, catalog=serde.catalog, topic=topic)
        except TransientError as exc:  # the broker is not reachable yet: a service waits for it
            attempt += 1
            _log.warning("cannot publish the schemas to %s yet (%s); retrying", topic, exc)
            shutdown.wait(retry.delay(attempt))
            continue
        _log.info("schemas on %s: %d published, the rest already there", topic, written)
        return True
    return False
