"""The load service. Its sink is outside Kafka, so effects are idempotent by batch id and offsets are
committed after them (at least once, never lost).

Consumes ``Topics.DATA_TRANSFORMED``, ``Topics.CONTROL``. The skeleton's ``handle`` publishes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.load.configuration import LoadSettings
from shared.contracts import Contract, DataBatch, RunControl, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService


class LoadService(ProcessorService[LoadSettings]):
    name = "load"
    stage = Stage.LOAD
    settings_class = LoadSettings
    transactional = False  # at-least-once into an idempotent sink

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.DATA_TRANSFORMED): DataBatch,
            self.settings.topic(Topics.CONTROL): RunControl,
        }

    def handle(self, value: Contract, context: MessageContext) -> Sequence[Output]:
        return []
