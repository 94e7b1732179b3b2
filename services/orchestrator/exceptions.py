"""Errors of the orchestrator's self-healing (``services.orchestrator.healing``).

Both are terminal, like every agent error: asking again for the same remedy on the same error cannot
change the answer. ``Healer`` turns either into a ``FAIL`` decision that says why, so a run is never left
waiting on a remedy that cannot be applied.
"""

from __future__ import annotations

from shared.agent.errors import AgentError


class RemedyError(AgentError):
    """A remedy the policy chose cannot be turned into a spec change."""


class RemedyNotApplicableError(RemedyError):
    """The remedy does not fit the error (e.g. quarantine for a run-level rule)."""


class RemedyNotAllowedError(RemedyError):
    """The healing policy does not allow this remedy."""
