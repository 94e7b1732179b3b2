"""Kafka topic sink: each row becomes one Avro single-object-encoded record.

Key = ``<batch_id>:<row index>``, headers carry run and batch ids, so a consumer can drop duplicates
itself. The producer is idempotent (no duplicates from its own retries) and ``write`` returns only after
every record of the batch is acknowledged by all in-sync replicas; any failed delivery fails the write.

Delivery guarantee: AT-LEAST-ONCE. A batch redelivered to this same sink object is recognised and skipped
(``applied=False``), but after a crash or on another replica the batch is produced again: Kafka has no
ledger a producer can consult atomically. Exactly-once needs the load stage to run in transactional mode
(consume-transform-produce in one Kafka transaction), which is the service runtime's business.

The producer comes from ``KafkaClients`` with the load service's ``KafkaSettings``, so it connects with
the same security settings as the service's own clients. Row schemas go to the system's schemas topic
(``aoetl.schemas`` plus the topic suffix), where consumers of the destination topic resolve them.

The destination topic cannot be an internal one (``shared.policy.names``), checked when the sink is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import confluent_kafka
import pyarrow as pa
from confluent_kafka import KafkaError

from services.load.exceptions import DestinationUnavailableError
from services.load.sinks.avro_rows import RowEncoder
from services.load.sinks.base import WriteResult, require_columns
from shared.errors import DataError
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import Topics
from shared.policy.names import require_topic
from shared.policy.settings import load_policy
from shared.settings import KafkaSettings
from shared.spec.models import KafkaDestination

Headers = list[tuple[str, str | bytes | None]]
_FLUSH_TIMEOUT_S = 60.0
# Broker-side conditions that pass: the same batch may be produced successfully later.
_TRANSIENT_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


class KafkaSink:
    """Sink for a ``KafkaDestination``."""

    def __init__(
        self,
        destination: KafkaDestination,
        kafka: KafkaSettings,
        *,
        schemas_topic: str | None = Topics.SCHEMAS,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        require_topic(destination.topic, load_policy())
        self._topic = destination.topic
        self._schemas_topic = schemas_topic
        # idempotent with acks=all (the factory's defaults); a longer linger packs a batch's rows together
        self._producer = KafkaClients(kafka).producer(**{"linger.ms": 20, **(producer_config or {})})
        self._encoders: dict[pa.Schema, RowEncoder] = {}
        self._published: set[bytes] = set()  # schema fingerprints already on the schemas topic
        self._applied: set[tuple[str, str]] = set()  # (run_id, batch_id) produced by this object
        self._seen_keys: dict[str, set[tuple[Any, ...]]] = {}  # run_id -> dedupe keys produced

    def write(
        self, run_id: str, batch_id: str, table: pa.Table, *, dedupe_keys: Sequence[str] = ()
    ) -> WriteResult:
        require_columns(table, dedupe_keys, "dedupe keys")
        if (run_id, batch_id) in self._applied:
            return WriteResult(applied=False, rows_written=0, rows_deduplicated=0)
        seen = self._seen_keys.setdefault(run_id, set())
        kept, new_keys = _drop_seen_keys(table, dedupe_keys, seen) if dedupe_keys else (table, set())
        encoder = self._encoder(kept.schema)
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(err)

        if self._schemas_topic and encoder.fingerprint not in self._published:
            self._produce(
                self._schemas_topic, encoder.fingerprint.hex(), encoder.schema_text.encode(), on_delivery
            )
        headers: Headers = [("aoetl.run_id", run_id.encode()), ("aoetl.batch_id", batch_id.encode())]
        produced = 0  # bytes of the record values (keys, headers and the schema record not counted)
        for index, value in enumerate(encoder.encode_rows(kept)):
            self._produce(self._topic, f"{batch_id}:{index}", value, on_delivery, headers)
            produced += len(value)
        remaining = self._producer.flush(_FLUSH_TIMEOUT_S)
        if remaining:
            raise DestinationUnavailableError(
                f"{remaining} records to {self._topic} not acknowledged in time"
            )
        if failures:
            self._raise_for(failures[0], len(failures))
        self._published.add(encoder.fingerprint)
        self._applied.add((run_id, batch_id))
        seen.update(new_keys)
        return WriteResult(
            applied=True,
            rows_written=kept.num_rows,
            rows_deduplicated=table.num_rows - kept.num_rows,
            bytes_written=produced,
        )

    def finalize(self, run_id: str) -> None:
        self._forget(run_id)

    def abort(self, run_id: str) -> None:
        """Produced records cannot be taken back; consumers see the run's failure on the events topic."""
        self._forget(run_id)

    def close(self) -> None:
        self._producer.flush(_FLUSH_TIMEOUT_S)

    # ------------------------------------------------------------------------------------ internals
    def _encoder(self, schema: pa.Schema) -> RowEncoder:
        encoder = self._encoders.get(schema)
        if encoder is None:
            encoder = self._encoders[schema] = RowEncoder(schema, self._topic)
        return encoder

    def _produce(
        self,
        topic: str,
        key: str,
        value: bytes,
        on_delivery: Any,
        headers: Headers | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: serve delivery reports to make room
                self._producer.poll(0.1)
            except confluent_kafka.KafkaException as exc:
                self._raise_for(exc.args[0], 1)

    def _raise_for(self, error: KafkaError, count: int) -> None:
        message = f"{count} records to {self._topic} failed: {error.str()}"
        if error.code() in _TRANSIENT_CODES or error.retriable():
            raise DestinationUnavailableError(message)
        raise DataError(message)

    def _forget(self, run_id: str) -> None:
        self._applied = {key for key in self._applied if key[0] != run_id}
        self._seen_keys.pop(run_id, None)


def _drop_seen_keys(
    table: pa.Table, keys: Sequence[str], seen: set[tuple[Any, ...]]
) -> tuple[pa.Table, set[tuple[Any, ...]]]:
    """First row per key not produced before by this sink object in the run. Kafka has no store to share
    keys through, so cross-batch dedupe here is per process (exact with one load replica)."""
    new_keys: set[tuple[Any, ...]] = set()
    keep: list[bool] = []
    for key in zip(*(table.column(k).to_pylist() for k in keys), strict=True):
        fresh = key not in seen and key not in new_keys
        keep.append(fresh)
        if fresh:
            new_keys.add(key)
    return table.filter(pa.array(keep, pa.bool_())), new_keys
