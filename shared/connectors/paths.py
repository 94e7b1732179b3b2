"""Turn a source ``path`` (plain path, ``file://`` URL or glob) into a sorted list of files."""

from __future__ import annotations

import glob
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.connectors.errors import SourceNotFoundError

_GLOB_CHARS = frozenset("*?[")


def to_local_path(path_or_url: str) -> str:
    if path_or_url.startswith("file:"):
        parsed = urlparse(path_or_url)
        if parsed.netloc not in ("", "localhost"):
            raise SourceNotFoundError(f"only local file:// URLs are supported, got {path_or_url!r}")
        return unquote(parsed.path)
    return path_or_url


def resolve_files(path_or_url: str) -> list[Path]:
    """Absolute paths of the files named by the source, sorted so every planner run sees the same order."""
    local = to_local_path(path_or_url)
    if any(ch in local for ch in _GLOB_CHARS):
        files = sorted(Path(p).absolute() for p in glob.glob(str(Path(local).expanduser()), recursive=True))
        files = [p for p in files if p.is_file()]
        if not files:
            raise SourceNotFoundError(f"no file matches {path_or_url!r}")
        return files
    path = Path(local).expanduser().absolute()
    if not path.exists():
        raise SourceNotFoundError(f"file not found: {path}")
    if not path.is_file():
        raise SourceNotFoundError(f"not a regular file: {path} (use a glob such as '{path}/*.csv')")
    return [path]


def split_path(split_uri: str | None) -> Path:
    """The file a split reads. Split URIs are absolute ``file://`` URLs written by the planner."""
    if not split_uri:
        raise SourceNotFoundError("file split has no uri")
    path = Path(to_local_path(split_uri))
    if not path.is_file():
        raise SourceNotFoundError(f"file not found: {path}")
    return path
