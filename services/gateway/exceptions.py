"""Errors of the gateway service: a ``TransientError`` is worth retrying (the client may get a 503), any
other error means the request itself is wrong."""

from __future__ import annotations

from shared.errors import TerminalError, TransientError


class GatewayError(TerminalError):
    """The request cannot be accepted as it is."""


class GatewayTransientError(TransientError):
    """Kafka could not take the request right now; the client may retry."""


class SignatureError(GatewayError):
    """A webhook delivery is not authentic (answered 401). ``reason`` is one of ``missing``, ``malformed``,
    ``mismatch``, ``stale`` or ``future``: a metrics label and a hint, never which secret was close."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(detail)


class PayloadError(GatewayError):
    """The delivery is authentic but cannot be used: not JSON, or no delivery id (answered 400)."""
