"""Names derived from run and batch ids. They must be deterministic (a retry derives the same name) and
safe as file names and SQL identifiers whatever characters the ids contain."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def short_run_id(run_id: str) -> str:
    """8 hex characters: short enough for a 63-byte PostgreSQL identifier, stable for a run id."""
    return hashlib.sha1(run_id.encode()).hexdigest()[:8]


def safe_file_part(value: str) -> str:
    """A file-name-safe rendering of an id. A short hash suffix keeps two ids that differ only in unsafe
    characters ("a:1" and "a/1") from colliding on the same file."""
    cleaned = _UNSAFE.sub("_", value)
    if cleaned == value:
        return value
    return f"{cleaned}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"
