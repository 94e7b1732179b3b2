"""Structured logs: one JSON object per line with the context that makes a line findable (service,
instance, topic, partition, offset, run_id).

Every handler ``configure_logging`` installs masks secrets (``SecretMaskingFilter``): a known secret value
(``shared.redaction``) or a URL/conninfo password in a message, its arguments, extra fields or traceback
is replaced by ``***`` before any formatter sees it.

Per-message context is carried in a ``contextvars.ContextVar`` (``log_context``), so it follows the code
through calls and asyncio tasks without being threaded through every signature. Service and instance are
process-wide and set once by ``configure_logging``: a ContextVar would not reach threads started later.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from shared.redaction import redact

CONTEXT_FIELDS = ("service", "instance", "topic", "partition", "offset", "run_id")

_context: ContextVar[Mapping[str, Any] | None] = ContextVar("aoetl_log_context", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (nested blocks add to, then restore, the
    outer context). ``None`` values are dropped so optional ids do not print as null."""
    merged = {**current_context(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return _context.get() or {}


class ContextFilter(logging.Filter):
    """Copies the static and the current context fields onto each record, where both formatters find them."""

    def __init__(self, static: Mapping[str, Any] | None = None):
        super().__init__()
        self.static = dict(static or {})

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in {**self.static, **current_context()}.items():
            if not hasattr(record, key):  # an explicit ``extra=`` wins
                setattr(record, key, value)
        return True


class SecretMaskingFilter(logging.Filter):
    """Masks secrets in a record before it is formatted: the message is rendered with its arguments and
    redacted, string extras are redacted, and the traceback is rendered once, redacted, as ``exc_text``
    (``exc_info`` is dropped so no formatter renders the unmasked original again)."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: keep the raw parts
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in self._STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal; context fields follow the message as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None
        )
        return f"{line} [{extras}]" if extras else line


def make_formatter(log_format: Literal["json", "text"]) -> logging.Formatter:
    if log_format == "text":
        return TextFormatter()
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def configure_logging(
    *,
    service: str,
    instance: str,
    level: str = "INFO",
    log_format: Literal["json", "text"] = "json",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Replace the root handlers with one handler on ``stream`` (stderr by default). Returns the handler
    so tests can remove it again."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter({"service": service, "instance": instance}))
    handler.addFilter(SecretMaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
