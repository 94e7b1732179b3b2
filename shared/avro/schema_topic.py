"""Every writer schema on the compacted ``aoetl.schemas`` topic, keyed by fingerprint hex.

With single-object encoding a message names its writer only by fingerprint; this topic turns that
fingerprint into the schema from Kafka alone, so a consumer in any language (or one deployed before a new
writer) needs no registry service. Values are the complete expanded schema JSON (with logical types,
defaults and docs, which the Parsing Canonical Form would strip); a reader verifies that the value's
fingerprint equals its key before trusting it.

Both the publisher and the resolver build their clients with ``KafkaClients``, so they connect with the
same security settings as every other client of the service.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from shared.avro.catalog import SchemaCatalog, SchemaEntry
from shared.avro.errors import SchemaSourceUnavailableError
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import Topics
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)


def schema_value(entry: SchemaEntry) -> bytes:
    return json.dumps(entry.json, separators=(",", ":"), ensure_ascii=False).encode()


def publish_schemas(
    kafka: KafkaSettings,
    *,
    catalog: SchemaCatalog | None = None,
    topic: str = Topics.SCHEMAS,
    timeout_s: float = 30.0,
) -> int:
    """Publish the schemas (current and historical) the topic lacks; returns how many were written.

    Idempotent: a second call writes nothing, and a race between two publishers only writes the same
    key/value twice, which compaction folds away. Skipping what is there (rather than relying on
    compaction alone) keeps restarts from growing the topic: compaction never touches the active segment,
    so every start of every replica would otherwise add the whole catalog again.
    """
    catalog = catalog if catalog is not None else SchemaCatalog.default()
    known = SchemaTopicResolver(kafka, topic=topic, timeout_s=timeout_s)
    known.refresh()
    missing = [e for e in catalog.all_entries() if known.lookup(e.fingerprint) is None]
    if not missing:
        return 0
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = KafkaClients(kafka).producer()
    for entry in missing:
        producer.produce(
            topic, key=entry.fingerprint.hex(), value=schema_value(entry), on_delivery=on_delivery
        )
    undelivered = producer.flush(timeout_s)
    if undelivered or failures:
        raise SchemaSourceUnavailableError(
            f"publishing schemas to {topic}: {undelivered} undelivered, errors: {failures[:3]}"
        )
    return len(missing)


class SchemaTopicResolver:
    """Writer schemas read from the schemas topic. ``refresh()`` reads it from the start to the high
    watermark with a group-less consumer (no offsets committed, nothing to clean up)."""

    def __init__(self, kafka: KafkaSettings, *, topic: str = Topics.SCHEMAS, timeout_s: float = 10.0):
        self.kafka = kafka
        self.topic = topic
        self.timeout_s = timeout_s
        self._entries: dict[bytes, SchemaEntry] = {}

    def lookup(self, fingerprint: bytes) -> SchemaEntry | None:
        return self._entries.get(fingerprint)

    def __len__(self) -> int:
        return len(self._entries)

    def refresh(self) -> None:
        # the group id is required by librdkafka but never used: the reader assigns and never commits
        consumer = KafkaClients(self.kafka).consumer(
            f"aoetl-schema-resolver-{uuid.uuid4().hex}", partition_eof=True
        )
        try:
            entries = self._read_all(consumer)
        except KafkaException as exc:
            raise SchemaSourceUnavailableError(f"reading {self.topic}: {exc}") from exc
        finally:
            consumer.close()
        self._entries = entries  # one assignment: readers on other threads see old or new, never half

    def _read_all(self, consumer: Consumer) -> dict[bytes, SchemaEntry]:
        deadline = time.monotonic() + self.timeout_s
        metadata = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            return {}  # no topic yet means no schemas published yet
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self.timeout_s
            )
            if high > low:
                ends[partition] = high
        entries: dict[bytes, SchemaEntry] = {}
        if not ends:
            return entries
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SchemaSourceUnavailableError(f"{self.topic} not read to its end in {self.timeout_s}s")
            msg = consumer.poll(min(remaining, 1.0))
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition() or 0, None)
                    continue
                raise KafkaException(error)
            self._apply(entries, msg.key(), msg.value())
            if (msg.offset() or 0) + 1 >= ends.get(msg.partition() or 0, 0):
                ends.pop(msg.partition() or 0, None)
        return entries

    @staticmethod
    def _apply(entries: dict[bytes, SchemaEntry], key: bytes | str | None, value: bytes | str | None) -> None:
        if key is None:
            return
        try:
            fingerprint = bytes.fromhex(key.decode() if isinstance(key, bytes) else key)
            if value is None:  # tombstone: the schema was withdrawn
                entries.pop(fingerprint, None)
                return
            entry = SchemaEntry.from_json(json.loads(value))
        except Exception as exc:  # a bad record must not hide the good ones
            log.warning("skipping unreadable record %r on the schemas topic: %s", key, exc)
            return
        if entry.fingerprint != fingerprint:
            log.warning(
                "skipping schema %s keyed %s: its fingerprint is %s", entry.name, key, entry.fingerprint.hex()
            )
            return
        entries[fingerprint] = entry
