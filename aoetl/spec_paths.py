"""Paths in a spec file mean what they mean to the person who wrote the file.

A spec travels to services that run elsewhere, in a working directory of their own: ``path: data/x.csv``
read there names another file (or none), which is how ``aoetl suggest data/x.csv -o x.yaml`` followed by
``aoetl run x.yaml`` used to fail with "file not found: <the services' directory>/data/x.csv". So the CLI
resolves every relative path of a spec against the directory of the file the spec was read from before
the spec leaves the machine (``aoetl validate``, ``submit``, ``run``, ``definitions apply``): the
submitted spec carries absolute paths or URLs only, and means the same file from any working directory.

What is resolved: the ``path`` of a file source (``csv``, ``jsonl``, ``parquet``, globs included) and of a
file destination (``duckdb``, ``parquet``, ``jsonl``); any source or destination type with a string
``path`` field is treated alike, so a new file connector needs nothing here. What is kept as written: a
URL (``s3://...``, ``file://...``: anything with a scheme), an absolute path. ``~`` is the CLI user's
home. ``..`` components are resolved lexically (``os.path.normpath``), never by following symlinks: the
services' data-root policy refuses ``..`` in a path and resolves every symlink itself when it checks and
when it opens the file, so resolving here takes no check away from it.

``portable`` is the other direction, for the files the CLI writes (``aoetl suggest -o``): a path under the
written file's directory is written relative to it (the folder can be moved or committed as one), any
other path absolute; either way ``resolve`` reads back the file the CLI profiled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

# RFC 3986's scheme, then "://" (or "file:", whose local forms are handled by the services)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^file:")

SpecT = TypeVar("SpecT", bound=BaseModel)


def is_url(path: str) -> bool:
    return bool(_URL.match(path))


def resolve(path: str, base: Path) -> str:
    """``path`` as an absolute, normalised path taken from ``base``; a URL or an empty string unchanged."""
    if not path or is_url(path):
        return path
    expanded = Path(os.path.expanduser(path))
    joined = expanded if expanded.is_absolute() else Path(os.path.abspath(base)) / expanded
    return os.path.normpath(joined)


def portable(path: str, spec_dir: Path) -> str:
    """``path`` (relative to the working directory, or absolute) as a spec file in ``spec_dir`` should
    say it: relative to ``spec_dir`` when it lies under it, else absolute; a URL unchanged."""
    if not path or is_url(path):
        return path
    absolute = Path(resolve(path, Path.cwd()))
    home = Path(resolve(str(spec_dir), Path.cwd()))
    if absolute.is_relative_to(home) and absolute != home:
        return absolute.relative_to(home).as_posix()
    return str(absolute)


def resolve_spec_paths(spec: SpecT, base: Path) -> SpecT:
    """``spec`` with every relative source and destination path resolved against ``base`` (the directory
    of the spec's file)."""
    return _map_paths(spec, lambda path: resolve(path, base))


def portable_spec_paths(spec: SpecT, spec_dir: Path) -> SpecT:
    """``spec`` with its paths as a spec file written in ``spec_dir`` should hold them (``portable``)."""
    return _map_paths(spec, lambda path: portable(path, spec_dir))


def _map_paths(spec: SpecT, change: Callable[[str], str]) -> SpecT:
    update: dict[str, BaseModel] = {}
    for part in ("source", "destination"):
        connector = getattr(spec, part, None)
        path = getattr(connector, "path", None)
        if isinstance(connector, BaseModel) and isinstance(path, str):
            changed = change(path)
            if changed != path:
                update[part] = connector.model_copy(update={"path": changed})
    return spec.model_copy(update=update) if update else spec
