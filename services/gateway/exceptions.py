"""Errors of the gateway service: a ``TransientError`` is worth retrying (the client may get a 503), any
other error means the request itself is wrong."""

from __future__ import annotations

from shared.errors import TerminalError, TransientError


class GatewayError(TerminalError):
    """The request cannot be accepted as it is."""


class GatewayTransientError(TransientError):
    """Kafka could not take the request right now; the client may retry."""
