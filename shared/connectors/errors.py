"""Errors raised by source connectors, classified once so retry and dead-letter routing stay mechanical."""

from __future__ import annotations

from shared.errors import ConfigurationError, TerminalError, TransientError


class SourceNotFoundError(TerminalError):
    """The source does not exist: a missing file, a glob matching nothing, a missing table, HTTP 404."""


class SourceReadError(TerminalError):
    """The source exists but its content cannot be read as asked (a malformed line, an invalid query)."""


class SourceUnavailableError(TransientError):
    """The source cannot be reached right now (connection refused, HTTP 5xx/429 after all retries)."""


class UnsupportedSourceError(ConfigurationError):
    """No connector can plan or read this source type."""
