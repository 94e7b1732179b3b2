"""Data roots: file sources (``csv``, ``jsonl``, ``parquet``, globs included) and file destinations
(``duckdb``, ``parquet``, ``jsonl``) only under the directories the operator configured.

A path is refused when it contains a ``..`` component (even one that would land inside a root: the rule
is simpler to read than to reason about), a NUL byte, a symlink loop, or when its *real* path (every
symlink resolved, ``~`` expanded, relative paths taken from the working directory) is outside every root.
A glob is checked twice: its fixed leading directories must be inside a root at validation, and every file
it matches must be inside a root when it is expanded, so ``**`` cannot follow a symlinked directory out.

Checked twice, on purpose: :func:`path_issue` at validation (a REJECTED answer with the field path), and
:func:`confine` / :func:`open_confined` / :func:`create_confined` where a connector or sink opens the file.
The second check resolves the path again and, for files it opens itself, verifies what the opened
descriptor really is (``/proc/self/fd``; the inode on systems without procfs), so a symlink planted after
validation, or swapped in between the check and the ``open``, is still refused. Files opened by a library
that only takes a path (DuckDB) are opened by their resolved real path and resolved again afterwards.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from urllib.parse import unquote, urlparse

from shared.policy.errors import PolicyViolation
from shared.policy.s3_urls import is_s3
from shared.policy.settings import DATA_ROOTS_ENV, PolicySettings
from shared.policy.tenancy import DEFAULT_TENANT
from shared.spec.loader import SpecIssue
from shared.spec.models import (
    CsvSource,
    DuckDBDestination,
    JsonlDestination,
    JsonlSource,
    ParquetDestination,
    ParquetSource,
    PipelineSpec,
)

GLOB_CHARS = frozenset("*?[")


def local_path(path_or_url: str) -> str:
    """A plain path for a path or a ``file://`` URL; ``ValueError`` for a URL naming another host."""
    if path_or_url.startswith("file:"):
        parsed = urlparse(path_or_url)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"only local file:// URLs are supported, got {path_or_url!r}")
        return unquote(parsed.path)
    return path_or_url


def is_glob(path: str) -> bool:
    return any(ch in path for ch in GLOB_CHARS)


def is_under(path: Path, roots: Iterable[Path]) -> bool:
    """``path`` and ``roots`` are real paths; a root contains itself. The same answer as
    ``path.is_relative_to(root)``, from the paths' own parts: ``is_relative_to`` builds two new paths per
    root, and a run's file is checked against every root at least three times (~20 us of pathlib each)."""
    parts = path.parts
    for root in roots:
        prefix = root.parts
        # the empty root (``.``) holds every relative path, as ``is_relative_to`` says
        if parts[: len(prefix)] == prefix if prefix else not path.is_absolute():
            return True
    return False


def real_path(path: str) -> Path:
    """Absolute, ``~`` expanded, every existing symlink resolved (a missing tail is kept as written, so a
    destination that does not exist yet resolves too). ``PolicyViolation`` on a symlink loop."""
    expanded = os.path.expanduser(path)
    try:
        return Path(os.path.realpath(expanded, strict=True))
    except (FileNotFoundError, NotADirectoryError):
        return Path(os.path.realpath(expanded))  # resolves the existing part, dangling symlinks included
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PolicyViolation(f"{path}: symlink loop") from exc
        raise PolicyViolation(f"{path}: cannot be resolved ({exc.strerror})") from exc


def _describe_roots(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def _lexical_problem(path: str, roots: Sequence[Path]) -> str | None:
    if not roots:
        return f"file access is disabled: no data root is configured ({DATA_ROOTS_ENV})"
    if "\x00" in path:
        return "a path cannot contain a NUL character"
    if ".." in path and ".." in PurePath(path).parts:  # parsed only if it may have one (most do not)
        return "'..' is not allowed in a path"
    return None


def glob_base(pattern: str) -> str:
    """The leading directories of a glob that hold no wildcard (``.`` when the first one does)."""
    fixed: list[str] = []
    for part in PurePath(pattern).parts:
        if is_glob(part):
            break
        fixed.append(part)
    return str(PurePath(*fixed)) if fixed else "."


def confine(path_or_url: str, roots: Sequence[Path]) -> Path:
    """The real path of a file path (not a glob), or ``PolicyViolation`` when the policy refuses it."""
    try:
        path = local_path(path_or_url)
    except ValueError as exc:
        raise PolicyViolation(str(exc)) from exc
    problem = _lexical_problem(path, roots)
    if problem:
        raise PolicyViolation(f"{path_or_url}: {problem}")
    real = real_path(path)
    if not is_under(real, roots):
        raise PolicyViolation(f"{path_or_url}: {real} is outside the data roots ({_describe_roots(roots)})")
    return real


def confine_glob(pattern_or_url: str, roots: Sequence[Path]) -> str:
    """The glob pattern as a local path after checking its fixed leading directories."""
    try:
        pattern = local_path(pattern_or_url)
    except ValueError as exc:
        raise PolicyViolation(str(exc)) from exc
    problem = _lexical_problem(pattern, roots)
    if problem:
        raise PolicyViolation(f"{pattern_or_url}: {problem}")
    confine(glob_base(os.path.expanduser(pattern)), roots)
    return pattern


def path_issue(path_or_url: str, roots: Sequence[Path]) -> str | None:
    """Why the policy refuses this source or destination path (a glob allowed), or None."""
    try:
        if is_glob(local_path(path_or_url)):
            confine_glob(path_or_url, roots)
        else:
            confine(path_or_url, roots)
    except (PolicyViolation, ValueError) as exc:
        return str(exc)
    return None


def verify_descriptor(fd: int, expected: Path, roots: Sequence[Path]) -> None:
    """The open file ``fd`` is inside the roots: what the kernel says it opened, not what a path said."""
    try:
        actual = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no procfs: the descriptor must be the very file the checked path names
        opened, named = os.fstat(fd), os.stat(expected)
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            raise PolicyViolation(f"{expected}: the file changed while it was opened") from None
        return
    if not is_under(actual, roots):
        raise PolicyViolation(f"{expected}: opened {actual}, which is outside the data roots")


def open_confined(path: str | Path, roots: Sequence[Path]) -> io.BufferedReader:
    """Open an existing file for reading, only if it is (and stays, once open) inside the roots."""
    real = confine(str(path), roots)
    handle = open(real, "rb")  # noqa: SIM115 - the caller owns it
    try:
        verify_descriptor(handle.fileno(), real, roots)
    except BaseException:
        handle.close()
        raise
    return handle


def create_confined(path: str | Path, roots: Sequence[Path]) -> io.BufferedWriter:
    """Create a new file at exactly this name (never an existing one, never through a symlink planted at
    the name: ``O_EXCL | O_NOFOLLOW``) for writing, only in a directory inside the roots."""
    name = Path(path)
    target = confine(str(name.parent), roots) / name.name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        verify_descriptor(fd, target, roots)
    except BaseException:
        os.close(fd)
        target.unlink(missing_ok=True)  # through a directory swapped in meanwhile: the file just made
        raise
    return io.BufferedWriter(io.FileIO(fd, "wb"))


def check_files(spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT) -> list[SpecIssue]:
    """The policy rule: the spec's file source and file destination paths (the same for every tenant)."""
    issues: list[SpecIssue] = []
    source, destination = spec.source, spec.destination
    if isinstance(source, CsvSource | JsonlSource | ParquetSource) and not is_s3(source.path):
        reason = path_issue(source.path, policy.data_roots)
        if reason:
            issues.append(SpecIssue(f"source.{source.type}.path", reason))
    file_destination = DuckDBDestination | ParquetDestination | JsonlDestination
    if isinstance(destination, file_destination) and not is_s3(destination.path):
        # s3:// paths are the object-storage rule's (``shared.policy.object_store``).
        # A destination path is never expanded, so a wildcard in it is a literal character.
        try:
            confine(destination.path, policy.data_roots)
        except PolicyViolation as exc:
            issues.append(SpecIssue(f"destination.{destination.type}.path", str(exc)))
    return issues
