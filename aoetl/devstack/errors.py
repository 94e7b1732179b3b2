"""Errors of the local stack, placed in the project taxonomy so callers retry or give up mechanically."""

from __future__ import annotations

from shared.errors import ConfigurationError, TransientError


class StackStartupError(TransientError):
    """A component did not come up (or answer) before its deadline; a later attempt may succeed."""


class MissingToolError(ConfigurationError):
    """A required binary (java, mvn, initdb...) is absent; run ``make bootstrap`` first."""
