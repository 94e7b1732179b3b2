"""The extract service: one task reads one split of the source.

Consumes ``Topics.TASKS``; produces ``DataBatch``es on ``Topics.DATA_EXTRACTED`` (or, with
``AOETL_CHAIN_TRANSFORM``, transformed ones on ``Topics.DATA_TRANSFORMED``: ``services.extract.handoff``)
and a SPLIT_EXTRACTED event in the same Kafka transaction, so a split is all-or-nothing downstream; a
large split commits alone (``shared.processing.budget``), small tasks share a transaction.
A source that fails terminally (missing file, malformed data) becomes a TASK_FAILED event that fails the
run, plus the task in the dead-letter topic for redrive; transient failures are retried locally with
backoff, then reported as TASK_FAILED(transient) so the orchestrator can reschedule the task.

Beside the task loop, a stream supervisor runs the continuous pipelines (``kafka`` sources) that the
streams topic says are RUNNING; see ``services.extract.streams``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.extract.configuration import ExtractSettings
from services.extract.handoff import Handoff, handoff_for
from services.extract.streams import StreamConfig, stream_supervisor
from services.extract.worker import extract, task_failed
from shared.contracts import Contract, ExtractTask, Stage, StreamRun
from shared.kafka.compacted import CompactedView
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService
from shared.signals import GracefulShutdown


class ExtractService(ProcessorService[ExtractSettings]):
    name = "extract"
    stage = Stage.EXTRACT
    settings_class = ExtractSettings

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {self.settings.topic(Topics.TASKS): ExtractTask}

    def __init__(self, settings: ExtractSettings, **kw: object):
        super().__init__(settings, **kw)  # type: ignore[arg-type]
        self.handoff = self.new_handoff()  # the task loop's; each continuous run has its own

    def new_handoff(self) -> Handoff:
        s = self.settings
        salt = s.mask_salt.get_secret_value().encode()
        return handoff_for(s.chain_transform, s.topic, s.instance_id, mask_salt=salt)

    def run(self, shutdown: GracefulShutdown) -> None:
        s = self.settings
        view = CompactedView(s.kafka, s.topic(Topics.STREAMS), StreamRun, self.serde)
        streams = stream_supervisor(
            view,
            StreamConfig(
                kafka=s.kafka,
                instance_id=s.instance_id,
                topic_suffix=s.topic_suffix,
                linger_s=s.stream_linger_ms / 1000,
                heartbeat_s=s.stream_heartbeat_s,
                session_timeout_ms=s.session_timeout_ms,
                transaction_timeout_ms=s.transaction_timeout_ms,
                kafka_timeout_s=s.kafka_timeout_s,
                handoff=self.new_handoff,
            ),
            self.serde,
        )
        view.start()
        streams.start()
        try:
            super().run(shutdown)
        finally:
            streams.stop()
            view.stop()
            self.handoff.close()

    def handle(self, value: Contract, context: MessageContext) -> Iterable[Output]:
        assert isinstance(value, ExtractTask)
        events = self.settings.topic(Topics.EVENTS)
        return extract(value, self.handoff, events, self.settings.instance_id, context.origin())

    def on_failure(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> Sequence[Output]:
        if not isinstance(value, ExtractTask):
            return []
        return [
            task_failed(value, exc, context, self.settings.topic(Topics.EVENTS), self.settings.instance_id)
        ]
