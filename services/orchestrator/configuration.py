"""Settings of the orchestrator service: ``ProcessorSettings`` (prefix ``AOETL_``) with its own defaults,
and the agent's settings (``AOETL_LLM_*``, ``AOETL_AGENT_*``) nested so they are validated with the rest at
start-up: a bad value stops the service before its first message, not at the first intent."""

from __future__ import annotations

from pydantic import Field

from services.orchestrator.healing.policy import HealingPolicy
from shared.agent.settings import AgentSettings
from shared.settings import ProcessorSettings


class OrchestratorSettings(ProcessorSettings):
    group_id: str = Field("aoetl-orchestrator", min_length=1)
    retry_backoff_s: float = Field(1.0, gt=0, description="first delay before re-issuing a failed task")
    tick_interval_s: float = Field(1.0, gt=0, description="how often timeouts and due retries are checked")
    healing_enabled: bool = Field(True, description="let the agent heal failed batches within the policy")
    healing: HealingPolicy = Field(default_factory=HealingPolicy, description="JSON, e.g. AOETL_HEALING")
    trigger_refresh_s: float = Field(1.0, gt=0, description="how often topic trigger rules are re-read")
    trigger_commit_interval_s: float = Field(
        5.0, gt=0, description="topic triggers: commit the offsets of non-matching events this often"
    )
    tenant_topics_refresh_s: float = Field(
        10.0, gt=0, description="how soon a new tenant's request topic is subscribed (metadata refresh)"
    )
    schedule_grace_s: float = Field(
        60.0, gt=0, description="schedules with missed 'skip': a tick fired later than this is dropped"
    )
    schedule_clock_offset_s: float = Field(
        0.0, description="added to the clock schedules read (tests reach a tick without waiting for it)"
    )
    agent: AgentSettings = Field(default_factory=AgentSettings, description="read from AOETL_LLM_* etc.")
