"""What the gateway's follower (``services.gateway.bus``) reads, and what each record does to the views.

One group-less consumer follows these topics (no consumer group: every replica must see everything, and
watching must not commit anyone's offsets):

* definitions, from the beginning (a compacted topic: its full content is the catalog);
* API keys (with ``AOETL_AUTH_API_KEYS``), from the beginning (compacted: the key ring). Every
  ``max_staleness / 4`` seconds the bus notes the time and the topic's end offsets, and once it has read up
  to them it confirms the ring fresh as of that time; the ring refuses keys once that confirmation is older
  than ``AOETL_AUTH_KEYS_MAX_STALENESS_S`` (``shared.auth.keys``), which bounds how long any replica may go
  on accepting a revoked key, even one cut off from Kafka;
* requests, from ``history_s`` back: every run id seen is a request already acknowledged (API
  idempotency keys, and no run requested twice);
* deliveries, from ``delivery_memory_s`` back: the replay memory of webhook deliveries
  (``services.gateway.deliveries``). ``caught_up_to`` lets a replica wait until it has read its own claim,
  which is how replicas agree on which copy of a delivery came first;
* events and results, from ``history_s`` back: folded into the run status view;
* alerts and dead letters, from ``history_s`` back: the per-tenant view of ``GET /alerts`` and
  ``GET /dead-letters`` (``services.gateway.records``);
* consumer lag, from the beginning (compacted, one record per group: the monitor's measurements), for the
  console's stage backlog. Not waited for: a page without it says so.


A record the gateway cannot decode is skipped with a warning: the gateway only watches these topics, it is
not theirs to dead-letter, and skipping keeps every view going. Applying is synchronous and quick (no
I/O): the follower applies a whole batch between two polls.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiokafka import ConsumerRecord

from shared.avro import AvroError
from shared.contracts import (
    Alert,
    ApiKey,
    ConsumerLag,
    DeadLetter,
    PipelineDefinition,
    PipelineRequest,
    PipelineResult,
    RequestAction,
    RunEvent,
    WebhookDelivery,
)

if TYPE_CHECKING:
    from services.gateway.bus import KafkaBus

_log = logging.getLogger("services.gateway.bus")


def apply_record(bus: KafkaBus, topic: str, record: ConsumerRecord[bytes, bytes]) -> None:
    """Apply one followed record to the view it feeds."""
    t = bus.topics
    try:
        if topic == t.definitions:
            name = record.key.decode() if record.key is not None else None
            if name is None:
                return
            value = None if record.value is None else bus.serde.decode(record.value, PipelineDefinition)
            bus.catalog.apply(name, value)
        elif topic == t.api_keys:
            key_id = record.key.decode() if record.key is not None else None
            key = None if record.value is None else bus.serde.decode(record.value, ApiKey)
            if key_id is None or (key is not None and key.key_id != key_id):
                _log.warning("skipping a keys record whose key is not its key id (offset %d)", record.offset)
                return
            bus.keys.apply(key_id, key)
        elif record.value is None:
            return
        elif topic == t.requests:
            request = bus.serde.decode(record.value, PipelineRequest)
            if request.action is RequestAction.STOP:
                return  # asks to stop a run the views already know; it starts nothing
            bus.ledger.record(request.run_id)
            bus.runs.on_request(request)
        elif topic == t.events:
            bus.runs.on_event(bus.serde.decode(record.value, RunEvent))
        elif topic == t.results:
            bus.runs.on_result(bus.serde.decode(record.value, PipelineResult))
        elif topic == t.deliveries:
            bus.deliveries.apply(bus.serde.decode(record.value, WebhookDelivery))
        elif topic == t.alerts:
            bus.records.on_alert(bus.serde.decode(record.value, Alert), bus.runs.tenant_of)
        elif topic == t.lag:
            bus.records.on_lag(bus.serde.decode(record.value, ConsumerLag))
        elif topic == t.dead_letters:
            letter = bus.serde.decode(record.value, DeadLetter)
            position = (record.partition, record.offset)
            bus.records.on_dead_letter(letter, bus.runs.tenant_of, position)
    except (AvroError, UnicodeDecodeError) as exc:
        # Not ours to dead-letter (we only watch); skipping keeps the views going.
        _log.warning("skipping undecodable record %s[%d]@%d: %s", topic, record.partition, record.offset, exc)
