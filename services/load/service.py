"""The load service: applies transformed batches to their destinations, and end-of-run controls.

Consumes ``Topics.DATA_TRANSFORMED`` and ``Topics.CONTROL``. Its sink is outside Kafka, so it runs the
loop in sink mode: the sink applies each batch idempotently by batch id (ledger in the same transaction
as the rows), then the events are produced and checked, then the offsets are committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.load.configuration import LoadSettings
from services.load.worker import LoadWorker
from shared.contracts import Contract, DataBatch, RunControl, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService
from shared.signals import GracefulShutdown


class LoadService(ProcessorService[LoadSettings]):
    name = "load"
    stage = Stage.LOAD
    settings_class = LoadSettings
    transactional = False  # at-least-once into an idempotent sink

    def __init__(self, settings: LoadSettings, **kw: object):
        super().__init__(settings, **kw)  # type: ignore[arg-type]
        self.worker = LoadWorker(settings.topic, settings.instance_id, settings.kafka)

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.DATA_TRANSFORMED): DataBatch,
            self.settings.topic(Topics.CONTROL): RunControl,
        }

    def handle(self, value: Contract, context: MessageContext) -> Iterable[Output]:
        if isinstance(value, RunControl):
            return self.worker.control(value)
        assert isinstance(value, DataBatch)
        return self.worker.load(value)

    def on_failure(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> Sequence[Output]:
        if isinstance(value, DataBatch | RunControl):
            return [self.worker.failed(value, exc)]
        return []

    def run(self, shutdown: GracefulShutdown) -> None:
        try:
            super().run(shutdown)
        finally:
            self.worker.close()
