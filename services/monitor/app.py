"""The monitor's stream topology, on faust-streaming.

Why faust here (and not the confluent-kafka transactional loop of the data plane): the monitor's work is
*stateful* over time, not a message-in/messages-out transformation. Its state lives in faust Tables whose
changelog topics survive restarts (a restarted instance restores them before it consumes) and move with
their partitions when replicas rebalance, and faust gives the windowed counts and the timers the rules
need. The data plane keeps confluent-kafka transactions because it must move data exactly once; the
monitor's tables need only at-least-once with idempotent updates (see ``rules``). Its alerts are exactly
once, decided by the alerts topic itself (see ``services.monitor.alerts``), not by the tables.

Topology (every table is co-partitioned with the one topic that writes it, as faust requires):

* ``events`` agent -> ``runs`` table (key run id, partitions of the events topic): progress, thresholds,
  quality counters, alerts already raised. Raises QUALITY_THRESHOLD.
* ``stuck-check`` timer -> ``housekeeping`` topic (internal, same partition count as events, each command
  sent to the partition of its run) -> ``housekeeping`` agent, which raises RUN_STUCK or forgets a long
  finished run. The detour exists because a faust table can only be written while processing a message of
  its partition: the timer itself cannot record that it alerted.
* ``results`` agent -> ``failed-runs`` table (key run id): RUN_FAILED once per run; runs finished metric.
* ``dead-letters`` agent -> ``dead-letter-counts``, a tumbling windowed table keyed by source partition
  (one writer per key); the window's total over all partitions raises DEAD_LETTER_GROWTH.
* ``events`` agent -> ``lineage`` table (key run id), when lineage is configured: OpenLineage START and
  COMPLETE/FAIL/ABORT per run (``services.monitor.lineage.tracker``).
* ``consumer-lag`` timer -> lag gauges of the watched consumer groups (admin API), and one ``ConsumerLag``
  record per group on the lag topic, for the console.
* the ``events`` agent also offers each run's fold to the run history (``services.monitor.history``),
  which writes a new or changed run's summary at once and a run's moving counts at the ``run-history``
  timer, to the compacted runs topic.

Agents and timers fail loudly, never silently (``services.monitor.supervision``).

An alert is published (committed) *before* the table records it, so that a crash in between loses no
alert; the restarted monitor raises it again, and ``ExactlyOnceAlerts`` finds it on the alerts topic and
does not send it twice. The table's record only spares the rules from firing again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import faust

from services.monitor import metrics
from services.monitor.alerts import ExactlyOnceAlerts
from services.monitor.cluster import InputPartitions, faust_broker
from services.monitor.configuration import MonitorSettings
from services.monitor.exceptions import MonitorTransientError
from services.monitor.history import RunHistory, TransactionalSummarySink
from services.monitor.lag import LagProbe, LagPublisher
from services.monitor.lineage.tracker import configured_tracker
from services.monitor.rules import (
    RunRecord,
    Thresholds,
    apply_event,
    dead_letter_growth_alert,
    result_alert,
    should_forget,
    stuck_alert,
)
from services.monitor.supervision import Handler, Supervision
from services.monitor.transport import ReadCommittedTransport
from shared.avro import AvroDecodeError
from shared.contracts import Alert, Contract, DeadLetter, PipelineResult, RunEvent, Stage
from shared.kafka.replication import Replication
from shared.kafka.topics import Topics
from shared.kafka.types import Serde
from shared.logging import log_context

_log = logging.getLogger(__name__)

C = TypeVar("C", bound=Contract)
Clock = Callable[[], float]

SINGLE_BROKER = Replication.for_brokers(1)
STUCK = "stuck"
FORGET = "forget"


class MonitorApp:
    """One faust app with the monitor's agents, tables and timers. Build it inside the running event loop."""

    def __init__(
        self,
        settings: MonitorSettings,
        serde: Serde,
        partitions: InputPartitions,
        *,
        replication: Replication = SINGLE_BROKER,
        clock: Clock = time.time,
    ):
        self.settings = settings
        self.serde = serde
        self.partitions = partitions
        self.clock = clock
        self.thresholds = Thresholds(
            stuck_after_s=settings.stuck_after_s,
            quality_max_failed_fraction=settings.quality_max_failed_fraction,
            dead_letter_max_per_window=settings.dead_letter_max_per_window,
        )
        self.supervision = Supervision()
        self._assigned = False
        self._lag = LagProbe(settings.kafka, settings.kafka_timeout_s)
        self._lag_records = LagPublisher(
            settings.kafka, settings.topic(Topics.LAG), serde, settings.kafka_timeout_s
        )
        self._alerts = ExactlyOnceAlerts(
            settings.kafka,
            settings.topic(Topics.ALERTS),
            f"{settings.app_id}-alerts",  # one for every replica: the fence between them (see alerts)
            serde,
            timeout_s=settings.kafka_timeout_s,
        )
        self.history = RunHistory(
            TransactionalSummarySink(
                settings.kafka,
                settings.topic(Topics.RUNS),
                f"{settings.app_id}-runs-",  # one per events partition: its owner fences earlier ones
                serde,
                timeout_s=settings.kafka_timeout_s,
            ),
            owns=self._owns_events_partition,
        )

        settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
        app = self.app = faust.App(
            settings.app_id,
            **faust_broker(settings),
            store="memory://",
            web_enabled=False,
            autodiscover=False,
            topic_replication_factor=replication.factor,  # the transport applies the whole rule
            topic_partitions=partitions.events,
            consumer_auto_offset_reset="earliest",
            broker_client_id=f"aoetl-monitor-{settings.instance_id}",
            broker_session_timeout=settings.session_timeout_ms / 1000,
            # a heartbeat every third of the session, as the Kafka clients do by default
            broker_heartbeat_interval=settings.session_timeout_ms / 3000,
            datadir=settings.data_dir / f"{settings.app_id}-{settings.instance_id}",
        )
        app.transport = ReadCommittedTransport(app.conf.broker_consumer, app, replication)

        def raw_topic(name: str) -> Any:
            return app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw")

        self.events_topic = raw_topic(Topics.EVENTS)
        self.results_topic = raw_topic(Topics.RESULTS)
        self.dead_letters_topic = raw_topic(Topics.DEAD_LETTERS)
        self.housekeeping_topic = app.topic(
            f"{settings.app_id}-housekeeping",
            internal=True,
            partitions=partitions.events,
            key_serializer="raw",
            value_serializer="json",
        )
        self.runs = app.Table("runs", partitions=partitions.events)
        self.failed_runs = app.Table("failed-runs", partitions=partitions.results)
        window_s = settings.dead_letter_window_s
        self.dead_letter_counts = (
            app.Table("dead-letter-counts", default=int, partitions=partitions.dead_letters)
            .tumbling(window_s, expires=window_s * 2)
            .relative_to_stream()
        )

        # OpenLineage events of the runs, from this fold (services.monitor.lineage), when configured.
        self.lineage = configured_tracker(
            settings, serde, lambda: app.Table("lineage", partitions=partitions.events), partitions.events
        )

        self._agent("events", self.events_topic, self._on_events)
        self._agent("housekeeping", self.housekeeping_topic, self._on_housekeeping)
        self._agent("results", self.results_topic, self._on_results)
        self._agent("dead-letters", self.dead_letters_topic, self._on_dead_letters)
        app.timer(settings.stuck_check_interval_s, name="stuck-check")(
            self.supervision.timer("stuck-check", self.check_runs)
        )
        app.timer(settings.lag_check_interval_s, name="consumer-lag")(
            self.supervision.timer("consumer-lag", self.check_lag)
        )
        app.timer(settings.runs_flush_interval_s, name="run-history")(
            self.supervision.timer("run-history", self.history.flush)
        )
        app.on_rebalance_complete.connect(cast(Any, self._on_rebalance_complete))
        app.on_partitions_revoked.connect(cast(Any, self._on_partitions_revoked))

    # ------------------------------------------------------------------------------------- lifecycle
    async def close(self) -> None:
        """After ``app.stop()``: the clients the app does not own, and faust's app directory (its tables
        are in memory, restored from the changelogs, so nothing in it outlives the process)."""
        await self._lag.close()
        await self._lag_records.close()
        await self._alerts.close()
        if self.lineage is not None:
            self.lineage.close()
        await self.history.close()
        shutil.rmtree(self.app.conf.datadir, ignore_errors=True)

    def is_ready(self) -> bool:
        """Assigned, tables recovered, not rebalancing (read from the HTTP thread: plain attribute reads)."""
        return self._assigned and not self.app.rebalancing and self.failure is None

    def _owns_events_partition(self, partition: int) -> bool:
        """Whether this replica's consumer is assigned ``partition`` of the events topic now (the run
        history's test of a fence: a move or a spurious one)."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # no consumer (yet, or any more): nothing is ours
            return False
        return any(
            tp.topic == self.events_topic.get_topic_name() and tp.partition == partition for tp in assignment
        )

    # Signal receivers (mode calls them with the sender, the signal and the signal's arguments).
    def _on_rebalance_complete(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self._assigned = True

    def _on_partitions_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self._assigned = False

    def _agent(self, name: str, topic: Any, handler: Handler) -> None:
        self.app.agent(topic, name=name)(self.supervision.agent(name, handler))

    @property
    def failure(self) -> BaseException | None:
        return self.supervision.failure

    @property
    def failed(self) -> asyncio.Event:
        return self.supervision.failed

    # ----------------------------------------------------------------------------------------- agents
    def _decode(self, event: faust.EventT, model: type[C]) -> C | None:
        try:
            return self.serde.decode(event.value, model)
        except AvroDecodeError as exc:
            # Not dead-lettered: the monitor reads the dead-letter topic itself, that would loop.
            metrics.UNDECODABLE.labels(event.message.topic).inc()
            _log.warning(
                "skipping undecodable %s at %s[%d]@%d: %s",
                model.__name__,
                event.message.topic,
                event.message.partition,
                event.message.offset,
                exc,
            )
            return None

    async def _on_events(self, event: faust.EventT) -> None:
        run_event = self._decode(event, RunEvent)
        if run_event is None:
            return
        with log_context(run_id=run_event.run_id):
            record = RunRecord.from_table(self.runs.get(run_event.run_id))
            updated, alerts = apply_event(
                record, run_event, partition=event.message.partition, thresholds=self.thresholds
            )
            metrics.observe_event(run_event, updated.pipeline)
            for alert in alerts:
                await self.publish(alert)
            # before the table write, as an alert: a crash in between writes the summary again, never loses it
            before = record.progress if record is not None else None
            await self.history.offer(before, updated.progress, event.message.partition)
            if updated != record:
                self.runs[run_event.run_id] = updated.to_table()
            if self.lineage is not None:
                loaded = updated.progress.stages.get(Stage.LOAD)
                rows = loaded.total.rows_out if loaded else None
                await self.lineage.on_event(run_event, partition=event.message.partition, rows_loaded=rows)

    async def _on_housekeeping(self, event: faust.EventT) -> None:
        command = event.value
        if not isinstance(command, dict):
            return
        run_id = command.get("run_id", "")
        record = RunRecord.from_table(self.runs.get(run_id))
        if record is None:
            return
        if record.partition != event.message.partition:
            _log.error(
                "housekeeping for run %s on partition %d, expected %d",
                run_id,
                event.message.partition,
                record.partition,
            )
            return
        now = self.clock()
        with log_context(run_id=run_id):
            if command.get("action") == STUCK:
                # Checked again: a progress event may have arrived since the timer looked.
                alert = stuck_alert(record, now)
                if alert is not None:
                    await self.publish(alert)
                    self.runs[run_id] = record.with_alert(alert.kind).to_table()
            elif command.get("action") == FORGET and should_forget(
                record, now, self.settings.finished_retention_s
            ):
                del self.runs[run_id]

    async def _on_results(self, event: faust.EventT) -> None:
        result = self._decode(event, PipelineResult)
        if result is None:
            return
        with log_context(run_id=result.run_id):
            if self.failed_runs.get(result.run_id) is not None:
                return  # a redelivered result: already counted and alerted
            metrics.observe_result(result)
            alert = result_alert(result)
            if alert is not None:
                await self.publish(alert)
                self.failed_runs[result.run_id] = result.status.value

    async def _on_dead_letters(self, event: faust.EventT) -> None:
        dead_letter = self._decode(event, DeadLetter)
        if dead_letter is None:
            return
        metrics.observe_dead_letter(dead_letter)
        counts = self.dead_letter_counts
        counts[str(event.message.partition)] += 1
        total = sum(counts[str(p)].current() for p in range(self.partitions.dead_letters))
        window_s = self.settings.dead_letter_window_s
        timestamp = event.message.timestamp
        alert = dead_letter_growth_alert(
            total - 1,
            total,
            self.thresholds.dead_letter_max_per_window,
            timestamp - timestamp % window_s,
            window_s,
        )
        if alert is not None:
            await self.publish(alert)

    async def publish(self, alert: Alert) -> None:
        """Send and commit, unless it was sent before (see the module docstring for why before the table
        write)."""
        if not await self._alerts.publish(alert):
            metrics.ALERTS_NOT_REPEATED.labels(alert.kind.value).inc()
            _log.info(
                "alert %s of run %s was sent before; not sending it again", alert.kind.value, alert.run_id
            )
            return
        metrics.observe_alert(alert)
        _log.warning("alert %s (%s): %s", alert.kind.value, alert.severity.value, alert.message)

    # ----------------------------------------------------------------------------------------- timers
    def _active_partitions(self) -> set[int]:
        topic = self.events_topic.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def check_runs(self) -> None:
        """Find stuck and long-finished runs of the partitions this instance owns (the table also holds
        standby copies of others), and send each a command to the partition of its run."""
        now = self.clock()
        active = self._active_partitions()
        tracked: list[RunRecord] = []
        for run_id, value in list(self.runs.items()):
            record = RunRecord.from_table(value)
            if record is None or record.partition not in active:
                continue
            tracked.append(record)
            action = (
                STUCK
                if stuck_alert(record, now) is not None
                else FORGET
                if should_forget(record, now, self.settings.finished_retention_s)
                else None
            )
            if action is not None:
                await self.housekeeping_topic.send(
                    key=run_id.encode(),
                    value={"run_id": run_id, "action": action},
                    partition=record.partition,
                )
        metrics.observe_tracked_runs(tracked, now)

    async def check_lag(self) -> None:
        results = await self._lag.measure_all(self.settings.lag_groups)
        for group, lag in results.items():
            if isinstance(lag, MonitorTransientError):
                metrics.LAG_CHECK_FAILURES.labels(group).inc()
                _log.warning("lag of group %s: %s", group, lag)
                continue
            for topic, value in lag.items():
                metrics.CONSUMER_LAG.labels(group, topic).set(value)
        # the console's view of the stages' backlog (services.gateway.ui): what was measured, on Kafka
        await self._lag_records.publish({g: lag for g, lag in results.items() if isinstance(lag, dict)})
