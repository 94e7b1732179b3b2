"""Helpers every test may use. Poll with a deadline instead of sleeping a guessed amount of time."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value; fail the test with
    ``message`` (and the last exception raised by the predicate, if any) when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except AssertionError as exc:  # lets predicates use plain asserts
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def make_state_dir(prefix: str = "aoetl-test-") -> Path:
    """A private state folder the 'postgres' user can traverse (PostgreSQL runs as that user under root;
    pytest's own tmp folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path
