"""Errors of the extract service. Only the base class decides the routing: a ``TransientError`` is
retried with backoff, anything else is dead-lettered (see ``shared.processing``)."""

from __future__ import annotations

from shared.errors import TerminalError, TransientError


class ExtractError(TerminalError):
    """The extract stage cannot process this message; retrying will not help."""


class ExtractTransientError(TransientError):
    """The extract stage hit a passing problem (a dependency down, a timeout); the message is retried."""
