"""The orchestrator service. Requests and events are co-partitioned by run id, so one instance
sees all of a run.

Consumes ``Topics.REQUESTS``, ``Topics.EVENTS``. The skeleton's ``handle`` publishes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.orchestrator.configuration import OrchestratorSettings
from shared.contracts import Contract, PipelineRequest, RunEvent, Stage
from shared.kafka.topics import Topics
from shared.runtime import MessageContext, Output, ProcessorService


class OrchestratorService(ProcessorService[OrchestratorSettings]):
    name = "orchestrator"
    stage = Stage.ORCHESTRATE
    settings_class = OrchestratorSettings

    def input_types(self) -> Mapping[str, type[Contract]]:
        return {
            self.settings.topic(Topics.REQUESTS): PipelineRequest,
            self.settings.topic(Topics.EVENTS): RunEvent,
        }

    def handle(self, value: Contract, context: MessageContext) -> Sequence[Output]:
        return []
