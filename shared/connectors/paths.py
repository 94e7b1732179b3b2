"""Turn a source ``path`` (plain path, ``file://`` URL or glob) into a sorted list of files, and open them,
only inside the data roots of the spec policy (``shared.policy.files``). ``s3://`` paths are objects
(``shared.connectors.object_store``); connectors see both as ``SourceFile`` (``source_files``/``split_file``).

The policy is checked again here, where the files are opened, whatever validation said: the request may
not have been validated (produced straight to Kafka), and the file system may have changed since (a
symlink planted after validation). A refused path raises ``PolicyViolation``, a terminal error: the task
is dead-lettered and the run fails with the reason. ``roots=None`` reads the roots of this process's
policy (``AOETL_POLICY_DATA_ROOTS``).
"""

from __future__ import annotations

import glob
import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.connectors.errors import SourceNotFoundError
from shared.policy.errors import PolicyViolation
from shared.policy.files import confine, confine_glob, is_glob, is_under, local_path, open_confined, real_path
from shared.policy.s3_urls import is_s3
from shared.policy.settings import load_policy

Roots = Sequence[Path]


def _roots(roots: Roots | None) -> Roots:
    return load_policy().data_roots if roots is None else roots


def to_local_path(path_or_url: str) -> str:
    try:
        return local_path(path_or_url)
    except ValueError as exc:
        raise SourceNotFoundError(str(exc)) from exc


def resolve_files(path_or_url: str, roots: Roots | None = None) -> list[Path]:
    """Real paths of the files named by the source, sorted so every planner run sees the same order."""
    allowed = _roots(roots)
    local = to_local_path(path_or_url)
    if is_glob(local):
        pattern = confine_glob(path_or_url, allowed)
        expanded = str(Path(pattern).expanduser())
        matches = sorted(Path(p).absolute() for p in glob.glob(expanded, recursive=True))
        files: list[Path] = []
        for match in matches:
            real = real_path(str(match))
            if not is_under(real, allowed):  # ``**`` followed a symlinked directory out of the roots
                raise PolicyViolation(f"{path_or_url}: matches {match}, which is outside the data roots")
            if real.is_file():
                files.append(real)
        if not files:
            raise SourceNotFoundError(f"no file matches {path_or_url!r}")
        return files
    path = Path(local).expanduser().absolute()
    real = confine(path_or_url, allowed)  # first: whether a file exists outside the roots is not told
    if not real.exists():
        raise SourceNotFoundError(f"file not found: {path}")
    if not real.is_file():
        raise SourceNotFoundError(f"not a regular file: {path} (use a glob such as '{path}/*.csv')")
    return [real]


def split_path(split_uri: str | None, roots: Roots | None = None) -> Path:
    """The file a split reads. Split URIs are absolute ``file://`` URLs written by the planner."""
    if not split_uri:
        raise SourceNotFoundError("file split has no uri")
    real = confine(to_local_path(split_uri), _roots(roots))
    if not real.is_file():
        raise SourceNotFoundError(f"file not found: {real}")
    return real


def open_source(path: Path, roots: Roots | None = None) -> io.BufferedReader:
    """Open a source file for reading, checked against the roots once more as it is opened."""
    return open_confined(path, _roots(roots))


class SourceFile(Protocol):
    """One file a source reads, local or an object (``shared.connectors.object_store.S3Object``): its
    split ``uri``, its size, a seekable binary stream; ``str()`` names it in errors. ``identity()``: what
    the file is now, for caching what is read from it (None: not cacheable)."""

    @property
    def uri(self) -> str: ...

    @property
    def size(self) -> int: ...

    def open(self) -> io.BufferedReader: ...

    def identity(self) -> FileIdentity | None: ...


# What a local file is at one moment: device, inode, size, modification and change time. Writing the file
# changes its size or its times, replacing it changes the inode; the change time cannot be set back by
# its owner (``utime`` sets it to now), so a rewrite that restores size and mtime still changes it.
FileIdentity = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class LocalFile:
    """A local source file, opened only inside the data roots (``open_source``)."""

    path: Path

    @property
    def uri(self) -> str:
        return self.path.as_uri()

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def __str__(self) -> str:
        return str(self.path)

    def open(self) -> io.BufferedReader:
        return open_source(self.path)

    def identity(self) -> FileIdentity | None:
        """The file's identity now (``FileIdentity``), from ``lstat`` of its real path; None when that is no
        longer a regular file (a symlink swapped in since it was resolved: the caller opens it, checked)."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def source_files(path_or_url: str, connection: str | None) -> list[SourceFile]:
    """The files a source names, sorted: local paths or globs, or ``s3://`` objects through ``connection``."""
    if is_s3(path_or_url):
        from shared.connectors.object_store import resolve_objects  # pyarrow's S3 only when used

        return list(resolve_objects(path_or_url, connection))
    return [LocalFile(path) for path in resolve_files(path_or_url)]


def split_file(split_uri: str | None, connection: str | None) -> SourceFile:
    """The file a split reads (``file://`` or ``s3://`` URI written by the planner), checked again."""
    if split_uri and is_s3(split_uri):
        from shared.connectors.object_store import object_for

        return object_for(split_uri, connection)
    return LocalFile(split_path(split_uri))
