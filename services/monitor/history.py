"""The run history: one ``RunSummary`` per run on the compacted runs topic (``Topics.RUNS``, key run id),
written by the monitor from the fold of the run's events it keeps anyway, so that ``aoetl runs list``
reads one small record per run instead of the whole event history, and ``aoetl status`` still answers
once a run's events are past their retention.

**Why the monitor writes it.** It is the one service that already folds *every* run's events into its
progress (``shared.progress``, kept per run in its ``runs`` table, restored from the changelog after a
restart or a rebalance) and that has a transactional producer beside it (``services.monitor.alerts``).
The orchestrator folds only the runs it owns and finalizes one-shot runs; a continuous run's progress, and
the figures of runs whose orchestrator moved, would be missing there. The gateway keeps a bounded view
and has no transactional producer. A summary is a pure function of the fold (``summary_of``), and the fold
counts every unit once, so what the monitor writes is what the orchestrator's result says.

**When a summary is written.** After each event the summary of the run's fold before and after is
compared, ``as_of`` aside: an event that changes nothing a summary shows (a redelivered event, which the
fold counts once; a heartbeat) writes nothing. Changes are coalesced per run: a run's counts moving with
every batch are written once per ``flush`` (the monitor's ``run-history`` timer, every
``runs_flush_interval_s``), its latest summary only. A new run and a run whose status changed are
written at once, before the event's table change is recorded: so a crash between the two writes the
final summary again after the restart (the same summary: the compacted topic keeps one), never loses it.
Only a fold that saw the run's RUN_ACCEPTED (its first event, on the run's partition) is summarised, or a
rejected run's (which has none): a late event of a run the table already forgot
(``finished_retention_s``) starts an empty fold, whose summary would replace the run's real one.

**Exactly once, and why not with the consumed offsets.** The summaries of a flush are committed in one
Kafka transaction per events partition, with the transactional id ``<app id>-runs-<partition>``: the
replica that owns the partition now fences every earlier owner (a zombie that still holds a pending
summary cannot write it after the new owner started), and ``read_committed`` readers see a flush whole
or not at all. The consumed offsets are *not* in that transaction: faust commits its consumer offsets
itself, after it has flushed the table changelogs, and committing them earlier from here would let a
crash skip an event whose table change never reached the changelog, losing it from the fold for good.
What makes the topic exactly once instead is that a summary is a function of the restored fold: a
redelivered event changes neither, so it writes no second record, and a record written twice (the crash
window above) is the same record under the same key. A reader that keeps the latest record per key
(``aoetl runs list``, and compaction itself) sees one entry per run with the fold's figures.

**Fenced.** A writer fenced while the partition is no longer among its consumer's assignment (``owns``)
drops that partition's pending summaries (the new owner folds the uncommitted events again) and does not
retry, which would fence the new owner in turn. Fenced while it still owns the partition, the fence is
taken for a spurious one (a transaction the coordinator timed out, bumping the epoch; a coordinator
failover): the summaries stay pending and the next attempt's new producer takes the id back, so a
finished run's final summary is not lost to it. Fencing narrows, but cannot close, the window of a
replica that lost a partition and has not noticed yet (its assignment still says ``owns``): with no
consumer-group metadata in the transaction (above) its next write takes the id back.
What it could write then is an older summary of a run; so a reader never lets a summary without a final
status replace one with it (``aoetl.commands.runs.latest_summaries``): a finished run's summary is final,
as the fold's figures are once it finished.

**Why not the one transaction engine** (``shared.kafka.transaction``, which every other transaction of
aoetl goes through). Three of its rules do not hold here. (1) It answers a fence with a new producer of the
same id, until the third fence within a minute; that is safe there because its transactions carry the
consumer group's metadata (KIP-447), which stops a real zombie by the group generation however often it
takes the id back. These transactions cannot carry faust's offsets (above), so the id is the only fence
there is: the engine's retry would take it back from the partition's new owner and let a zombie go on
writing. Whether to retry must be decided by the assignment (``owns``), which the engine does not know.
(2) Its rewind-to-committed and redo of a batch has no counterpart: the input here is faust's, and what is
redone after a failure is the next flush of the pending summaries. (3) It is a blocking librdkafka client
for one thread; this writer runs inside faust's event loop beside its aiokafka clients (as
``services.monitor.alerts`` does), where a blocking commit would stall every agent and timer. What it
keeps of the engine's rules: every call bounded (``timeout_s``), a producer that failed in any way
replaced rather than reused (a new ``InitProducerId`` ends whatever the old one left open), and the
records of a commit all or none to ``read_committed`` readers.

A flush that cannot commit keeps its summaries pending and is tried again at the next tick; an immediate
write that cannot commit after ``ATTEMPTS`` raises ``MonitorTransientError`` (the monitor stops and its
restart processes the event again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced

from services.monitor.exceptions import MonitorTransientError
from shared.contracts import DEFAULT_TENANT, ErrorInfo, RunStatus, RunSummary, Stage
from shared.kafka.clients import KafkaClients
from shared.kafka.types import Serde
from shared.progress import RunProgress
from shared.settings import KafkaSettings

_log = logging.getLogger(__name__)

ATTEMPTS = 3
TRANSACTION_TIMEOUT_MS = 15_000  # short, as the alerts' (services.monitor.alerts): one flush is one commit
MAX_ERROR_CHARS = 500  # a summary names the error; the result and the events keep all of it

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def summary_of(progress: RunProgress, as_of: datetime) -> RunSummary:
    """What the run history says of a run, from its fold."""
    extract, transform, load = (progress.stage(s).total for s in (Stage.EXTRACT, Stage.TRANSFORM, Stage.LOAD))
    rules = progress.rule_totals()
    return RunSummary(
        run_id=progress.run_id,
        pipeline=progress.pipeline,
        tenant=progress.tenant or DEFAULT_TENANT,
        status=progress.status,
        continuous=progress.continuous,
        submitted_at=progress.accepted_at,
        started_at=progress.started_at,
        finished_at=progress.finished_at,
        rows_extracted=extract.rows_out,
        rows_transformed=transform.rows_out,
        rows_loaded=load.rows_out,
        rows_rejected=transform.rows_rejected + load.rows_rejected,
        batches_loaded=load.batches,
        bytes_loaded=load.bytes,
        rules_violated=sum(1 for rule in rules if rule.rows_failed > 0 or rule.failed),
        rows_failed_quality=sum(rule.rows_failed for rule in rules),
        error=_short(progress.last_error),
        as_of=as_of,
    )


def _short(error: ErrorInfo | None) -> ErrorInfo | None:
    if error is None or len(error.message) <= MAX_ERROR_CHARS:
        return error
    # cut after the redaction the event's ErrorInfo already had (a cut first could split a secret), and
    # redacted once more as the new ErrorInfo is validated
    cut = error.message[: MAX_ERROR_CHARS - 1] + "…"
    return ErrorInfo.model_validate(error.model_dump() | {"message": cut})


def summarised(progress: RunProgress) -> bool:
    """Whether the run history writes this fold: it saw the run's RUN_ACCEPTED, or the run was rejected
    (which has none); not an empty fold a late event of a forgotten run started (module docstring)."""
    return progress.accepted_at is not None or progress.status is RunStatus.REJECTED


def shows_the_same(a: RunSummary, b: RunSummary) -> bool:
    """Whether two summaries say the same of their run (when they were written aside)."""
    return a.model_dump(exclude={"as_of"}) == b.model_dump(exclude={"as_of"})


class SummariesFenced(MonitorTransientError):
    """Another replica holds the partition's transactional id now: the partition's summaries are its."""


class SummarySink(Protocol):
    """Commits the summaries of one events partition, all or none (a fake in the unit tests)."""

    async def commit(self, partition: int, summaries: Sequence[RunSummary]) -> None:
        """Raises ``SummariesFenced`` when another writer took the partition over, else
        ``MonitorTransientError`` when the summaries could not be committed."""

    async def close(self) -> None: ...


class RunHistory:
    """The monitor's writer of run summaries (see the module docstring). Not thread-safe; one event loop."""

    def __init__(
        self, sink: SummarySink, *, owns: Callable[[int], bool] = lambda partition: False, clock: Clock = _now
    ):
        """``owns(partition)``: whether this replica's consumer is assigned that events partition now."""
        self._sink = sink
        self._owns = owns
        self._clock = clock
        self._pending: dict[str, tuple[int, RunSummary]] = {}
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> dict[str, RunSummary]:
        return {run_id: summary for run_id, (_, summary) in self._pending.items()}

    async def offer(self, before: RunProgress | None, after: RunProgress, partition: int) -> bool:
        """Note the run's fold after an event (``before``: its fold before it, None for a new run); write
        it now when the run is new or its status changed. True when the summary changed."""
        if not summarised(after):
            return False
        now = self._clock()
        summary = summary_of(after, now)
        previous = summary_of(before, now) if before is not None and summarised(before) else None
        if previous is not None and shows_the_same(previous, summary):
            return False
        self._pending[summary.run_id] = (partition, summary)
        if previous is None or previous.status != summary.status:
            await self.flush(strict=True)
        return True

    async def flush(self, *, strict: bool = False) -> None:
        """Commit every pending summary (one transaction per events partition). A partition that cannot
        commit keeps its summaries pending; ``strict``: and raises ``MonitorTransientError``."""
        async with self._lock:
            by_partition: dict[int, list[RunSummary]] = {}
            for partition, summary in self._pending.values():
                by_partition.setdefault(partition, []).append(summary)
            failure: MonitorTransientError | None = None
            for partition, summaries in sorted(by_partition.items()):
                try:
                    await self._sink.commit(partition, summaries)
                except SummariesFenced as exc:
                    if self._owns(partition):
                        # still ours: a spurious fence; the sink's next producer takes the id back
                        _log.warning("%s although it is still ours; retrying", exc)
                        failure = exc
                        continue
                    # the partition moved: its new owner folds what this replica has not committed again
                    _log.warning("%s; dropping %d pending summaries of it", exc, len(summaries))
                    self._forget(summaries)
                    continue
                except MonitorTransientError as exc:
                    failure = exc
                    continue
                self._forget(summaries)
            if failure is not None and strict:
                raise failure
            if failure is not None:
                _log.warning("run summaries not written yet (retrying at the next flush): %s", failure)

    def _forget(self, summaries: Sequence[RunSummary]) -> None:
        for summary in summaries:
            # only if no newer summary of the run arrived while this one was being committed
            if self._pending.get(summary.run_id, (0, None))[1] is summary:
                del self._pending[summary.run_id]

    async def close(self) -> None:
        with contextlib.suppress(MonitorTransientError):
            await self.flush()
        await self._sink.close()


class TransactionalSummarySink:
    """``SummarySink`` on Kafka: one transactional producer per events partition (id
    ``<transactional_id_prefix><partition>``), created when that partition first writes; every attempt
    bounded by ``timeout_s``. Create it inside the running loop."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        transactional_id_prefix: str,
        serde: Serde,
        *,
        timeout_s: float,
    ):
        self._clients = KafkaClients(kafka)
        self._topic = topic
        self._prefix = transactional_id_prefix
        self._serde = serde
        self._timeout = timeout_s
        self._producers: dict[int, AIOKafkaProducer] = {}

    async def commit(self, partition: int, summaries: Sequence[RunSummary]) -> None:
        records = [(s.run_id.encode(), self._serde.encode(s)) for s in summaries]
        for attempt in range(1, ATTEMPTS + 1):
            try:
                producer = await asyncio.wait_for(self._producer(partition), self._timeout)
                await asyncio.wait_for(self._send(producer, records), self._timeout)
                return
            except (ProducerFenced, InvalidProducerEpoch) as exc:
                # not retried: a new producer would fence the partition's new owner in turn
                await self._drop(partition)
                raise SummariesFenced(
                    f"partition {partition}'s run summaries are written elsewhere now"
                ) from exc
            except (KafkaError, TimeoutError, OSError) as exc:
                # fenced (another replica owns the partition now), or the outcome is unknown: the next
                # producer's InitProducerId resolves the open transaction before it sends anything
                await self._drop(partition)
                if attempt == ATTEMPTS:
                    raise MonitorTransientError(
                        f"{len(records)} run summaries of partition {partition} not written: {exc!r}"
                    ) from exc
                _log.warning("run summaries of partition %d, attempt %d: %r", partition, attempt, exc)

    async def _send(self, producer: AIOKafkaProducer, records: list[tuple[bytes, bytes]]) -> None:
        async with producer.transaction():  # commits on leaving, aborts on an exception
            sent = [await producer.send(self._topic, value=value, key=key) for key, value in records]
            await asyncio.gather(*sent)

    async def _producer(self, partition: int) -> AIOKafkaProducer:
        producer = self._producers.get(partition)
        if producer is None:
            producer = self._clients.aio_producer(
                transactional_id=f"{self._prefix}{partition}",
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                request_timeout_ms=int(self._timeout * 1000),
            )
            self._producers[partition] = producer  # first: a start that fails half-way is dropped
            await producer.start()  # InitProducerId: fences the partition's earlier writer
        return producer

    async def _drop(self, partition: int) -> None:
        producer = self._producers.pop(partition, None)
        if producer is not None:
            with contextlib.suppress(Exception):  # discarded; the error that made us drop it counts
                await asyncio.wait_for(producer.stop(), self._timeout)

    async def close(self) -> None:
        for partition in list(self._producers):
            await self._drop(partition)
