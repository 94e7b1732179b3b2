"""The Kafka strategy of ``aoetl.transport``: the Kafka door. Requests and tombstones are produced behind the
door's audit record (``aoetl.commands.door``); state is read from the results, events, run-history,
alerts and dead-letters topics, as the commands read them without a gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from aoetl.transport import RunState, replayed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aoetl.client import AoetlClient
    from shared.contracts import Alert, Contract, DeadLetter, PipelineDefinition, PipelineResult, RunSummary
    from shared.spec.models import PipelineSpec

C = TypeVar("C", bound="Contract")


class KafkaTransport:
    """The Kafka door: requests and tombstones produced behind the door's audit record, state read from
    the results, events and run-history topics."""

    where = "Kafka"

    def __init__(self, client: AoetlClient | None = None):
        from aoetl.client import AoetlClient

        self.client = client or AoetlClient()
        self._letters: dict[str, DeadLetter] = {}

    def submit(self, spec: PipelineSpec) -> str:
        from aoetl.commands.door import submit_audited

        return submit_audited(self.client, spec).run_id

    def stop(self, run_id: str) -> None:
        from aoetl.commands.door import stop_audited

        stop_audited(self.client, run_id)

    @property
    def asks_only(self) -> bool:
        return self.client.door_tenant is not None

    def result(self, run_id: str) -> PipelineResult | None:
        return self.client.find_result(run_id)

    def stop_and_wait(self, run_id: str, timeout: float) -> PipelineResult | None:
        import time

        from aoetl.commands.door import stop_audited
        from shared.contracts import PipelineResult
        from shared.kafka.topics import Topics

        with self.client.reader(Topics.RESULTS, from_beginning=False) as reader:  # before the request
            stop_audited(self.client, run_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for _, value in reader.poll({Topics.RESULTS: PipelineResult}):
                    if isinstance(value, PipelineResult) and value.run_id == run_id:
                        return value
        return None

    def run_state(self, run_id: str) -> RunState | None:
        from aoetl.commands.runs import find_summary, summary_document
        from shared.progress import fold

        result = self.client.find_result(run_id)
        if result is not None:
            return RunState(run_id, result.status.value, result.model_dump(mode="json"))
        events = self.client.run_events(run_id)
        if events:
            progress = fold(run_id, events)
            status = progress.status.value if progress.status is not None else "RUNNING"
            return RunState(run_id, status, {"run_id": run_id, "status": status, "events": len(events)})
        summary = find_summary(self.client, run_id)
        if summary is None:
            return None
        status = summary.status.value if summary.status is not None else "RUNNING"
        return RunState(run_id, status, summary_document(summary))

    def definitions(self) -> list[PipelineDefinition]:
        from aoetl.commands.definitions import read_definitions

        return sorted(read_definitions(self.client).values(), key=lambda d: d.name)

    def runs(self, pipeline: str | None, status: str | None, limit: int | None) -> list[RunSummary]:
        from aoetl.commands.runs import latest_summaries, select

        return select(latest_summaries(self.client).values(), pipeline=pipeline, status=status, limit=limit)

    def alerts(self, run_id: str | None = None) -> list[Alert]:
        from shared.contracts import Alert
        from shared.kafka.topics import Topics

        with self.client.reader(Topics.ALERTS, from_beginning=True) as reader:
            found = [v for _, v in reader.drain({Topics.ALERTS: Alert}) if isinstance(v, Alert)]
        return [a for a in found if run_id is None or a.run_id == run_id]

    def dead_letters(
        self, run_id: str | None = None, stage: str | None = None, error_class: str | None = None
    ) -> list[dict[str, Any]]:
        from aoetl.commands.dlq import described, matching_letters

        found = list(matching_letters(self.client, run_id, stage, error_class))
        self._letters.update((d.dead_letter_id, d) for d in found)  # what ``replay`` re-drives
        return [described(d) for d in found]

    def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        from aoetl.commands.dlq import matching_letters

        found = matching_letters(self.client, None, None, None)
        return next((d for d in found if d.dead_letter_id == dead_letter_id), None)

    def replay(self, letters: list[dict[str, Any]], dry_run: bool) -> list[dict[str, Any]]:
        from aoetl.commands.dlq import replay_letters
        from aoetl.commands.door import DoorAudit

        if dry_run:
            return [replayed(letter, True, None, None) for letter in letters]
        chosen = [self._letters[letter["dead_letter_id"]] for letter in letters]  # as listed, with payloads
        audit = DoorAudit(self.client)
        for letter in chosen:
            audit.allowed("dlq.replay", f"dead-letter/{letter.dead_letter_id}")
        replay_letters(self.client, chosen)
        # produced synchronously, each acknowledged; the partition is the producer's choice by key
        return [replayed(letter, False, None, None) for letter in letters]

    def results(self, follow: bool, from_beginning: bool) -> Iterator[PipelineResult]:
        from shared.contracts import PipelineResult
        from shared.kafka.topics import Topics

        return self._records(Topics.RESULTS, PipelineResult, follow, from_beginning)

    def alert_stream(self, follow: bool, from_beginning: bool) -> Iterator[Alert]:
        from shared.contracts import Alert
        from shared.kafka.topics import Topics

        return self._records(Topics.ALERTS, Alert, follow, from_beginning)

    def _records(self, topic: str, model: type[C], follow: bool, from_beginning: bool) -> Iterator[C]:
        """The topic's records of ``model``: all there are, or (``follow``) from its end, or from its
        beginning with ``from_beginning``, until interrupted."""
        with self.client.reader(topic, from_beginning=from_beginning or not follow) as reader:
            read = reader.follow({topic: model}) if follow else reader.drain({topic: model})
            yield from (value for _, value in read if isinstance(value, model))

    def close(self) -> None:
        self.client.close()
