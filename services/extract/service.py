"""The extract service: one task reads one split of the source.

Consumes ``Topics.TASKS``. The skeleton's ``handle`` publishes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.extract.configuration import ExtractSettings
from shared.contracts import Contract, ExtractTask, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService


class ExtractService(ProcessorService[ExtractSettings]):
    name = "extract"
    stage = Stage.EXTRACT
    settings_class = ExtractSettings

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.TASKS): ExtractTask,
        }

    def handle(self, value: Contract, context: MessageContext) -> Sequence[Output]:
        return []
