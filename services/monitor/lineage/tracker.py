"""Lineage from the monitor's fold: one OpenLineage START per accepted run and one COMPLETE, FAIL or
ABORT when it finishes, emitted through ``openlineage-python`` to the transport its standard configuration
names (``OPENLINEAGE_URL``, ``OPENLINEAGE_CONFIG`` or ``OPENLINEAGE__TRANSPORT__*``: HTTP, file, Kafka...).

Off by default: the tracker runs only when ``AOETL_LINEAGE_ENABLED`` is true, or, left unset, when one of
those OpenLineage variables is set (and ``OPENLINEAGE_DISABLED`` is not true). The library is an optional
extra (``pip install 'aoetl[lineage]'``); enabled without it, the monitor refuses to start.

Where: the ``events`` agent calls ``on_event`` for every run event, in the run's partition. A faust table
``lineage`` (key run id, co-partitioned with the events topic, restored from its changelog after a
restart) holds what the terminal event needs: the datasets, from the spec RUN_ACCEPTED carries.

Once per transition, decided by run id + event type: RUN_ACCEPTED emits START unless the table says it
was emitted; RUN_FINISHED emits the terminal event only if the run's entry is there, then deletes it; so a
redelivered or replayed event of the run emits nothing. The window left is faust's at-least-once one: a
crash after the emit and before the table change reaches its changelog emits that event once more, and
it is then *identical* (same runId, eventType, eventTime, datasets), which backends that key on run id
and event type (Marquez does) store once. A backend that refuses the event or cannot be reached (after
the library's own retries) costs that event, logged and counted (``aoetl_lineage_events_total{event_type,
outcome}``); monitoring does not wait for lineage.

Runs never accepted (REJECTED) have no lineage: they never ran. A run whose request is no longer on Kafka
(retention) gives a job without datasets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter

from services.monitor.exceptions import MonitorTransientError
from services.monitor.lineage.datasets import Dataset, destination_dataset, source_dataset
from services.monitor.lineage.events import TERMINAL, build_event, job_namespace
from services.monitor.lineage.requests import RequestSpecs
from services.monitor.lineage.settings import LineageSettings
from shared.contracts import EventKind, RunAccepted, RunEvent, RunFinished
from shared.errors import ConfigurationError
from shared.kafka.admin import ensure_topics
from shared.kafka.clients import KafkaClients
from shared.kafka.topics import TopicSpec
from shared.kafka.types import Serde
from shared.spec.models import PipelineSpec

if TYPE_CHECKING:
    from services.monitor.configuration import MonitorSettings

_log = logging.getLogger(__name__)

LINEAGE_EVENTS = Counter(
    "aoetl_lineage_events",
    "OpenLineage run events the monitor emitted (outcome emitted) or could not (failed), by event type",
    ["event_type", "outcome"],
)


class Emitter(Protocol):
    def emit(self, event: Any) -> None: ...


class SpecSource(Protocol):
    """Where the spec of a run comes from when RUN_ACCEPTED does not carry it (``lineage.requests``)."""

    def spec_of(
        self, run_id: str, partition: int, at: datetime, tenant: str | None
    ) -> PipelineSpec | None: ...


def openlineage_client() -> Emitter:
    """The library's client, configured the library's standard way."""
    try:
        from openlineage.client import OpenLineageClient
    except ImportError as exc:
        raise ConfigurationError(
            "lineage is enabled but openlineage-python is not installed: pip install 'aoetl[lineage]'"
        ) from exc
    return OpenLineageClient()


class LineageTracker:
    """Folds run events into lineage events. ``table`` is the faust table (a dict in unit tests)."""

    def __init__(
        self,
        settings: LineageSettings,
        table: MutableMapping[str, Any],
        *,
        kafka_bootstrap: str,
        emitter: Emitter,
        specs: SpecSource | None = None,
    ):
        self.settings = settings
        self.table = table
        self._bootstrap = kafka_bootstrap
        self._emitter = emitter
        self._specs = specs

    def close(self) -> None:
        if isinstance(self._specs, RequestSpecs):
            self._specs.close()

    async def on_event(self, event: RunEvent, *, partition: int, rows_loaded: int | None = None) -> None:
        if event.kind is EventKind.RUN_ACCEPTED:
            await self._accepted(event, partition)
        elif event.kind is EventKind.RUN_FINISHED:
            await self._finished(event, rows_loaded)
        elif event.error is not None:
            # RUN_FINISHED carries no error: a FAIL event reports the run's latest failure seen here.
            entry = self.table.get(event.run_id)
            if entry is not None and entry.get("error") != event.error.message:
                self.table[event.run_id] = {**entry, "error": event.error.message}

    async def _accepted(self, event: RunEvent, partition: int) -> None:
        entry = self.table.get(event.run_id)
        if entry is not None and entry.get("started"):
            return  # a redelivered RUN_ACCEPTED
        accepted = event.payload_as(RunAccepted)
        if accepted is None:
            return
        entry = {
            "job": accepted.pipeline,
            "namespace": job_namespace(self.settings.namespace, accepted.tenant),
            "continuous": accepted.continuous,
            "inputs": [],
            "outputs": [],
            "started": False,
        }
        spec = accepted.spec
        if spec is None and self._specs is not None:  # the request's own spec: read it back from there
            spec = await asyncio.to_thread(
                self._specs.spec_of, event.run_id, partition, event.at, accepted.tenant
            )
        if spec is not None:
            entry["inputs"] = [source_dataset(spec, self._bootstrap).to_table()]
            entry["outputs"] = [destination_dataset(spec, self._bootstrap).to_table()]
        await self._emit("START", event, entry)
        self.table[event.run_id] = {**entry, "started": True}

    async def _finished(self, event: RunEvent, rows_loaded: int | None) -> None:
        entry = self.table.get(event.run_id)
        finished = event.payload_as(RunFinished)
        if entry is None or finished is None:
            return  # never started here (rejected), or its terminal event was emitted already
        event_type = TERMINAL.get(finished.status)
        if event_type is not None:
            error = None
            if event_type == "FAIL":
                error = entry.get("error") or f"the run ended {finished.status.value}"
            await self._emit(event_type, event, entry, rows_loaded=rows_loaded, error=error)
        del self.table[event.run_id]

    async def _emit(self, event_type: str, event: RunEvent, entry: dict[str, Any], **extra: Any) -> None:
        lineage_event = build_event(
            event_type,
            at=event.at,
            run_id=event.run_id,
            namespace=entry["namespace"],
            job=entry["job"],
            producer=self.settings.producer,
            inputs=[Dataset.from_table(d) for d in entry["inputs"]],
            outputs=[Dataset.from_table(d) for d in entry["outputs"]],
            continuous=bool(entry.get("continuous")),
            **extra,
        )
        try:
            # The transports block (HTTP with retries): off the event loop, which serves every agent.
            await asyncio.to_thread(self._emitter.emit, lineage_event)
        except Exception as exc:  # a lineage backend must never stop monitoring
            LINEAGE_EVENTS.labels(event_type, "failed").inc()
            _log.warning("lineage %s of run %s not emitted: %s", event_type, event.run_id, type(exc).__name__)
            return
        LINEAGE_EVENTS.labels(event_type, "emitted").inc()


def configured_tracker(
    settings: MonitorSettings,
    serde: Serde,
    make_table: Callable[[], Any],
    partitions: int,
) -> LineageTracker | None:
    """The monitor's tracker when lineage is enabled, else None. ``make_table`` creates its faust table."""
    if not settings.lineage.is_enabled():
        return None
    table = make_table()
    _declare_changelog(settings, table.changelog_topic_name, partitions)
    specs = RequestSpecs(
        settings.kafka, serde, suffix=settings.topic_suffix, timeout_s=settings.kafka_timeout_s
    )
    return LineageTracker(
        settings.lineage,
        table,
        kafka_bootstrap=settings.kafka.bootstrap_servers,
        emitter=openlineage_client(),
        specs=specs,
    )


def _declare_changelog(settings: MonitorSettings, name: str, partitions: int) -> None:
    """Create the table's changelog before faust starts, and wait until every partition has a leader.

    faust would create it while starting, and a table added to a running deployment is created last: its
    consumer could then cache the topic's metadata from before its partitions had leaders (0 partitions),
    which fails every write to the table (``PartitionsMismatch``) until the metadata is refreshed minutes
    later. Created and settled first, it is complete in faust's very first metadata.
    """
    ensure_topics(
        settings.kafka,
        [TopicSpec(name, partitions, {"cleanup.policy": "compact"}, "the monitor's lineage table")],
        replication_factor=settings.replication_factor,
        timeout=settings.kafka_timeout_s,
    )
    admin = KafkaClients(settings.kafka).admin()
    deadline = time.monotonic() + settings.kafka_timeout_s
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=settings.kafka_timeout_s).topics.get(name)
        found = topic.partitions if topic is not None and topic.error is None else {}
        if len(found) == partitions and all(p.leader >= 0 and p.error is None for p in found.values()):
            return
        time.sleep(0.1)  # polling the broker's metadata: there is nothing to wait on
    raise MonitorTransientError(f"the changelog {name} has no leader for every partition yet")
