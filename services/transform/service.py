"""The transform service: each extracted batch is transformed and checked on its own, by any replica.

Consumes ``Topics.DATA_EXTRACTED``; produces the transformed batch on ``Topics.DATA_TRANSFORMED``,
quarantined rows on ``Topics.DEAD_LETTERS`` and run events, in one Kafka transaction per poll. The stage
itself is ``shared.transform.batches`` (which a chaining extract runs too); this is its wiring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.transform.configuration import TransformSettings
from shared.batch import decode_table
from shared.contracts import Contract, DataBatch, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService
from shared.signals import GracefulShutdown
from shared.transform.batches import BatchTransformer, batch_failed


class TransformService(ProcessorService[TransformSettings]):
    name = "transform"
    stage = Stage.TRANSFORM
    settings_class = TransformSettings

    def __init__(self, settings: TransformSettings, **kw: object):
        super().__init__(settings, **kw)  # type: ignore[arg-type]
        self.worker = BatchTransformer(
            settings.topic, settings.instance_id, mask_salt=settings.mask_salt.get_secret_value().encode()
        )

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {self.settings.topic(Topics.DATA_EXTRACTED): DataBatch}

    def handle(self, value: Contract, context: MessageContext) -> Iterable[Output]:
        assert isinstance(value, DataBatch)
        # the incoming key: a batch id for one-shot runs, the source partition for continuous ones
        key: str | bytes = context.key if context.key is not None else value.batch_id
        return self.worker.transform(value, decode_table(value.payload), key, context.origin())

    def on_failure(
        self, value: Contract | None, exc: BaseException, context: MessageContext, raw: bytes
    ) -> Sequence[Output]:
        if not isinstance(value, DataBatch):
            return []
        return [batch_failed(value, exc, self.settings.topic(Topics.EVENTS), self.settings.instance_id)]

    def run(self, shutdown: GracefulShutdown) -> None:
        try:
            super().run(shutdown)
        finally:
            self.worker.close()
