"""Parquet and JSONL directory sinks: one file per batch, ``<dir>/<run_id>/part-<batch_id>.<ext>``.

Each file is written to a temp name in the same directory, fsynced, then ``os.replace``d into place, so a
part is either absent or complete; its existence *is* the ledger: a second delivery of the batch finds it
and writes nothing. ``finalize`` writes ``_SUCCESS`` (JSON: row count and file list) the same atomic way;
readers should only trust run directories that have it.

Cross-batch dedupe keys are the keys of the run's parts, read back from the files not read yet before
each batch (``run_keys.RunKeys``, shared with the ``s3://`` sink): exact when a run's batches are written
one after another; two replicas writing two batches of the same run at the same moment can each let the
same new key through once. Use a database sink when dedupe must hold under concurrent writers.

Only inside the data roots (``shared.policy.files``), checked at every operation, not once: the directory
is resolved and checked before anything is created in it, every temp file is created exclusively (never
through a symlink at its name) and its descriptor checked once open, and the parts read back (row counts,
dedupe keys) are opened the same way. A run id becomes a directory name, so one that cannot be a single
name (``.``, ``..``, empty) is refused with ``PolicyViolation``; other unsafe characters are replaced
(``naming.safe_file_part``).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from services.load.exceptions import DestinationUnavailableError
from services.load.sinks.base import WriteResult, require_columns
from services.load.sinks.naming import safe_file_part
from services.load.sinks.run_keys import FileFormat, RunKeys
from shared.policy.errors import PolicyViolation
from shared.policy.files import confine, create_confined, open_confined
from shared.policy.settings import load_policy

SUCCESS_MARKER = "_SUCCESS"


Roots = Sequence[Path]


def write_atomically(path: Path, write: Callable[[BinaryIO], object], roots: Roots | None = None) -> int:
    """``path`` appears complete and durable, or not at all (a crash leaves at most a hidden temp file).
    The temp file is created inside ``roots`` only (default: this process's policy). Returns its size."""
    allowed = load_policy().data_roots if roots is None else roots
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with create_confined(tmp, allowed) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            size = os.fstat(handle.fileno()).st_size
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)  # makes the rename itself durable
    return size


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSink:
    """Sink for a ``ParquetDestination`` or ``JsonlDestination``."""

    def __init__(self, directory: str | Path, file_format: FileFormat, *, roots: Roots | None = None) -> None:
        """``roots``: the data roots (default: this process's policy, read at each operation)."""
        self._root = Path(directory)
        self._format: FileFormat = file_format
        self._roots = roots
        self._keys = RunKeys(file_format)

    @property
    def roots(self) -> Roots:
        return load_policy().data_roots if self._roots is None else self._roots

    def run_directory(self, run_id: str) -> Path:
        """The run's directory: resolved, and refused (``PolicyViolation``) outside the data roots."""
        if run_id in ("", ".", ".."):
            raise PolicyViolation(f"run id {run_id!r} cannot name a directory")
        return confine(str(self._root / safe_file_part(run_id)), self.roots)

    def part_path(self, run_id: str, batch_id: str) -> Path:
        return self.run_directory(run_id) / f"part-{safe_file_part(batch_id)}.{self._format}"

    def write(
        self, run_id: str, batch_id: str, table: pa.Table, *, dedupe_keys: Sequence[str] = ()
    ) -> WriteResult:
        require_columns(table, dedupe_keys, "dedupe keys")
        path = self.part_path(run_id, batch_id)
        if path.exists():
            # Already applied: report what the first delivery wrote, so run totals stay exact.
            return WriteResult(
                applied=False,
                rows_written=self._count_rows(path),
                rows_deduplicated=0,
                bytes_written=self._size(path),
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            kept, new_keys = table, set[Hashable]()
            if dedupe_keys:
                keys = tuple(dedupe_keys)
                parts = {p.name for p in path.parent.glob(f"part-*.{self._format}")}
                self._keys.refresh(run_id, keys, parts, lambda name: self._read(path.parent / name))
                kept, new_keys = self._keys.drop_seen(run_id, keys, table)
            size = write_atomically(path, lambda handle: self._encode(kept, handle), self.roots)
        except OSError as exc:  # full disk, unmounted volume...: may clear up
            raise DestinationUnavailableError(f"cannot write {path}: {exc}") from exc
        if dedupe_keys:
            self._keys.remember(run_id, tuple(dedupe_keys), path.name, new_keys)
        return WriteResult(
            applied=True,
            rows_written=kept.num_rows,
            rows_deduplicated=table.num_rows - kept.num_rows,
            bytes_written=size,
        )

    def finalize(self, run_id: str) -> None:
        directory = self.run_directory(run_id)
        marker = directory / SUCCESS_MARKER
        if marker.exists():
            return
        directory.mkdir(parents=True, exist_ok=True)  # a run that wrote no batch still succeeds
        parts = sorted(p for p in directory.glob(f"part-*.{self._format}"))
        summary = {
            "run_id": run_id,
            "format": self._format,
            "rows": sum(self._count_rows(p) for p in parts),
            "files": [p.name for p in parts],
        }
        write_atomically(
            marker, lambda handle: handle.write(json.dumps(summary, indent=2).encode()), self.roots
        )
        self._keys.forget(run_id)

    def abort(self, run_id: str) -> None:
        """A failed run's parts are dropped, unless the run had already been finalized."""
        directory = self.run_directory(run_id)
        if not (directory / SUCCESS_MARKER).exists():
            shutil.rmtree(directory, ignore_errors=True)
        self._keys.forget(run_id)

    def close(self) -> None:
        self._keys.clear()

    # ---------------------------------------------------------------------------------- internals
    def _encode(self, table: pa.Table, handle: BinaryIO) -> None:
        if self._format == "parquet":
            pq.write_table(table, handle, compression="zstd")
        else:  # polars writes NDJSON in Rust, with ISO dates/timestamps and exact decimals
            pl.from_arrow(table).write_ndjson(handle)  # type: ignore[union-attr]

    def _size(self, path: Path) -> int:
        """The part's size on disk: the bytes its batch wrote (the ``_SUCCESS`` marker is not counted)."""
        with open_confined(path, self.roots) as handle:
            return os.fstat(handle.fileno()).st_size

    def _count_rows(self, path: Path) -> int:
        with open_confined(path, self.roots) as handle:
            if self._format == "parquet":
                return int(pq.ParquetFile(handle).metadata.num_rows)
            return sum(1 for line in handle if line.strip())

    def _read(self, path: Path) -> bytes:
        with open_confined(path, self.roots) as handle:
            return handle.read()
