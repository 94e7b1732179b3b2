"""Errors of the gateway service: a ``TransientError`` is worth retrying (the client may get a 503), any
other error means the request itself is wrong. Signature errors are the webhook library's
(``shared.webhooks.signatures.SignatureError``, answered 401)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException

from shared.errors import TerminalError, TransientError


class GatewayTransientError(TransientError):
    """Kafka could not take the request right now; the client may retry."""


class PayloadError(TerminalError):
    """The delivery is authentic but cannot be used: not JSON, or no delivery id (answered 400)."""


class ReplayRefusedError(TerminalError):
    """A copy of a delivery first seen longer ago than its source's replay window (answered 409): no
    sender retries that late, so it is taken for a replay and starts nothing."""

    def __init__(self, source: str, first_seen: float, window_s: float):
        at = datetime.fromtimestamp(first_seen, UTC).isoformat(timespec="seconds")
        super().__init__(
            f"replayed delivery: source {source!r} first saw it at {at}, more than its replay window"
            f" ({window_s:g}s) ago; nothing was started"
        )


def unavailable(exc: GatewayTransientError) -> HTTPException:
    """The 503 a transient failure is answered with; the sender should retry."""
    return HTTPException(503, detail=str(exc), headers={"Retry-After": "1"})
