"""Errors of the monitor service."""

from __future__ import annotations

from shared.errors import TerminalError, TransientError


class MonitorError(TerminalError):
    """The monitor cannot run as configured (e.g. an input topic does not exist)."""


class MonitorTransientError(TransientError):
    """A passing problem (the broker did not answer in time); the caller may retry."""
