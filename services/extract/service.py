"""The extract service: one task reads one split of the source.

Consumes ``Topics.TASKS``; produces ``DataBatch``es on ``Topics.DATA_EXTRACTED`` and a SPLIT_EXTRACTED
event, all in one Kafka transaction per task (``max_batch`` = 1), so a split is all-or-nothing downstream.
A source that fails terminally (missing file, malformed data) becomes a TASK_FAILED event that fails the
run, plus the task in the dead-letter topic for redrive; transient failures are retried locally with
backoff, then reported as TASK_FAILED(transient) so the orchestrator can reschedule the task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.extract.configuration import ExtractSettings
from services.extract.worker import extract, task_failed
from shared.contracts import Contract, ExtractTask, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService


class ExtractService(ProcessorService[ExtractSettings]):
    name = "extract"
    stage = Stage.EXTRACT
    settings_class = ExtractSettings

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {self.settings.topic(Topics.TASKS): ExtractTask}

    def handle(self, value: Contract, context: MessageContext) -> Iterable[Output]:
        assert isinstance(value, ExtractTask)
        topics = {t: self.settings.topic(t) for t in (Topics.DATA_EXTRACTED, Topics.EVENTS)}
        return extract(value, topics, self.settings.instance_id)

    def on_failure(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> Sequence[Output]:
        if not isinstance(value, ExtractTask):
            return []
        return [
            task_failed(value, exc, context, self.settings.topic(Topics.EVENTS), self.settings.instance_id)
        ]
