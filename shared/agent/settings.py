"""The agent's settings (prefix ``AOETL_``). No ``AOETL_LLM_MODEL`` means deterministic mode."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AOETL_", frozen=True, extra="ignore")

    llm_model: str | None = Field(
        None, description="provider:model for langchain's init_chat_model, e.g. openai:gpt-4o-mini"
    )
    llm_base_url: str | None = Field(None, description="base URL of an OpenAI-compatible (or Ollama) server")
    llm_api_key: SecretStr | None = None
    llm_temperature: float = Field(0.0, ge=0.0, le=2.0)
    llm_timeout_s: float = Field(60.0, gt=0)
    agent_max_repairs: int = Field(3, ge=0, le=20, description="rejected drafts sent back before giving up")
    agent_max_turns: int = Field(12, ge=1, le=100, description="model calls per plan, whatever happens")
    agent_sample_rows: int = Field(10_000, ge=1, le=1_000_000, description="rows profiled per source")
    agent_data_roots: list[Path] = Field(
        default_factory=lambda: [Path.cwd()],
        description="the model may only profile files under these directories (JSON list in the env)",
    )

    @property
    def deterministic(self) -> bool:
        return not self.llm_model
