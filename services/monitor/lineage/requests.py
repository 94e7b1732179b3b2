"""The spec of a run whose RUN_ACCEPTED does not carry it: read back from the run's request.

The orchestrator puts the spec on RUN_ACCEPTED only when it is not the request's own (a definition, an
intent, a watermark); a request with an inline spec is the only place that spec is on Kafka. Requests are
keyed by run id like the events, and a run's request and its events share a partition number (the
orchestrator relies on it: ``shared.kafka.topics``), so the request is on the event's partition of the
shared requests topic, or of the tenant's own request topic (the Kafka door), written before the event.

The lookup reads that partition, ``read_committed``, from shortly before the event (``offsets_for_times``)
up to the partition's end at the time of the lookup, widening the window once if needed; it is bounded by
``timeout_s`` and returns None when the request is gone (retention) or unreadable. Blocking: the tracker
calls it in a thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from shared.avro import AvroDecodeError
from shared.contracts import PipelineRequest
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import Topics, tenant_requests_topic
from shared.kafka.types import Serde
from shared.policy.tenancy import DEFAULT_TENANT
from shared.settings import KafkaSettings
from shared.spec.models import PipelineSpec

_log = logging.getLogger(__name__)

WINDOWS_S = (120.0, 3600.0)  # how long before the event its request may have been written


class RequestSpecs:
    """Looks up a run's inline spec in its request. Not thread-safe: one lookup at a time; ``close`` it."""

    def __init__(self, kafka: KafkaSettings, serde: Serde, *, suffix: str, timeout_s: float):
        self._clients = KafkaClients(kafka)
        self._serde = serde
        self._suffix = suffix
        self._timeout = timeout_s
        self._reader: Consumer | None = None

    def spec_of(self, run_id: str, partition: int, at: datetime, tenant: str | None) -> PipelineSpec | None:
        topics = [f"{Topics.REQUESTS}{self._suffix}"]
        if tenant not in (None, DEFAULT_TENANT):
            topics.append(tenant_requests_topic(tenant, self._suffix))
        consumer = self._consumer()
        for window in WINDOWS_S:
            for topic in topics:
                since = at.timestamp() - window
                spec = self._scan(consumer, TopicPartition(topic, partition), run_id, since)
                if spec is not None:
                    return spec
        return None

    def _consumer(self) -> Consumer:
        # One reader for every lookup (they come one at a time, from the events agent), kept for good:
        # a new client per run would cost a connection and a metadata round trip each time.
        if self._reader is None:
            group = f"aoetl-view-lineage-{uuid.uuid4().hex}"  # group-less: assign, never commit
            self._reader = self._clients.consumer(group)
        return self._reader

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _scan(self, consumer: Consumer, tp: TopicPartition, run_id: str, since: float) -> PipelineSpec | None:
        try:
            _low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout)
            (start,) = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, int(since * 1000))], timeout=self._timeout
            )
        except KafkaException as exc:  # e.g. no such tenant topic
            _log.debug("request lookup on %s[%d]: %s", tp.topic, tp.partition, exc)
            return None
        if start.offset < 0 or start.offset >= high:
            return None
        consumer.assign([TopicPartition(tp.topic, tp.partition, start.offset)])
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                return None
            if (msg.key() or b"").decode(errors="replace") == run_id:
                try:
                    request = self._serde.decode(msg.value() or b"", PipelineRequest)
                except AvroDecodeError:
                    return None
                if request.run_id == run_id and request.spec is not None:
                    return request.spec
            if (msg.offset() or 0) + 1 >= high:
                return None
        return None
