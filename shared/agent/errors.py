"""Errors of the agent. All terminal: a retry of the same request cannot change the outcome."""

from __future__ import annotations

from shared.errors import ConfigurationError, TerminalError


class AgentError(TerminalError):
    """Base class of the agent's errors."""


class UnprofilableSourceError(AgentError):
    """The source cannot be sampled here (a Kafka topic, an event payload, no rows...)."""


class SuggestionError(AgentError):
    """No valid spec could be suggested for the profile (the dry run keeps failing)."""


class ModelConfigurationError(ConfigurationError):
    """The configured LLM cannot be built (unknown provider, provider package missing)."""
