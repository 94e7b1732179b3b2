"""The monitor service: watches runs, results and dead letters to raise alerts.

Consumes ``Topics.EVENTS``, ``Topics.RESULTS``, ``Topics.DEAD_LETTERS``. The skeleton publishes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.monitor.configuration import MonitorSettings
from shared.contracts import Contract, DeadLetter, PipelineResult, RunEvent, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService


class MonitorService(ProcessorService[MonitorSettings]):
    name = "monitor"
    stage = Stage.MONITOR
    settings_class = MonitorSettings

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.EVENTS): RunEvent,
            self.settings.topic(Topics.RESULTS): PipelineResult,
            self.settings.topic(Topics.DEAD_LETTERS): DeadLetter,
        }

    def handle(self, value: Contract, context: MessageContext) -> Sequence[Output]:
        return []
