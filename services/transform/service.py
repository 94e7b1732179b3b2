"""The transform service: each extracted batch is transformed on its own, by any replica.

Consumes ``Topics.DATA_EXTRACTED``. The skeleton's ``handle`` publishes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.transform.configuration import TransformSettings
from shared.contracts import Contract, DataBatch, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService


class TransformService(ProcessorService[TransformSettings]):
    name = "transform"
    stage = Stage.TRANSFORM
    settings_class = TransformSettings

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.DATA_EXTRACTED): DataBatch,
        }

    def handle(self, value: Contract, context: MessageContext) -> Sequence[Output]:
        return []
