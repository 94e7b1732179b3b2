"""Every error the system raises is either *transient* (retrying the same work may succeed: a broker or
database hiccup, a timeout) or *terminal* (retrying cannot help: bad input, a spec that does not fit the
data). Retry loops and dead-letter routing look only at this flag, never at concrete classes, so adding a
new error never needs a new ``except`` clause elsewhere.
"""

from __future__ import annotations

from typing import ClassVar


class AoetlError(Exception):
    """Base of all project errors. ``transient`` decides retry vs dead-letter."""

    transient: ClassVar[bool] = False

    @property
    def error_class(self) -> str:
        return type(self).__name__


class TransientError(AoetlError):
    """Retrying the same work later may succeed."""

    transient = True


class TerminalError(AoetlError):
    """Retrying cannot succeed; the input or the configuration must change first."""

    transient = False


class ConfigurationError(TerminalError):
    """Settings or a spec that cannot work (missing DSN variable, unknown destination table...)."""


class DataError(TerminalError):
    """The data does not fit what the pipeline expects (a cast fails, a quality rule says fail)."""


def is_transient(exc: BaseException) -> bool:
    """Classify any exception. Unknown exceptions are terminal: retrying an unknown bug forever hides it."""
    if isinstance(exc, AoetlError):
        return exc.transient
    # Connection-level failures of the standard library are worth a retry.
    return isinstance(exc, ConnectionError | TimeoutError)
