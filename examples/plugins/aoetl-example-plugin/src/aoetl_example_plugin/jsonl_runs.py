"""``jsonl_runs``: one JSONL file per successful run, ``<path>/<run_id>.jsonl``, every batch exactly once.

How exactly-once holds (the ``shared.destinations.Sink`` contract): each batch is first written as its own
part, ``<path>/.<run_id>.parts/<batch_id>.jsonl``, to a temp name then renamed, so a part is complete or
absent, and its existence is the ledger: a redelivered batch finds it and writes nothing. ``finalize``
concatenates the parts in batch-id order into a temp file renamed to ``<run_id>.jsonl`` (so the run file
appears complete or not at all) and then drops the parts; run again, it finds the run file and does
nothing. ``abort`` drops the parts of a run that was not finalized.

Paths are hostile input: ``path`` is declared ``Checked.OUTPUT_PATH`` so the policy confines it to the
data roots at validation, and every file is created here through ``shared.policy.files`` (resolved and
checked again at each operation, created exclusively, never through a symlink).

Cross-batch dedupe is not offered (a dedupe step's keys reaching the sink are refused): the parts of a
run could be read back for it, as the built-in file sinks do, but an example should stay short.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import Field

from shared.destinations import SinkContext, WriteResult
from shared.errors import ConfigurationError
from shared.policy.files import confine, create_confined, open_confined
from shared.policy.names import require_safe_run_id
from shared.policy.settings import load_policy
from shared.spec.plugins import Checked, PluginDestination

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class JsonlRunsDestination(PluginDestination):
    type: Literal["jsonl_runs"] = "jsonl_runs"
    path: Annotated[str, Checked.OUTPUT_PATH] = Field(description="a directory; one <run_id>.jsonl per run")


def _file_name(value: str) -> str:
    """Batch ids hold ':'; both kinds of id are deterministic, so the name is too."""
    return _UNSAFE.sub("_", value)


class JsonlRunsSink:
    def __init__(self, directory: str) -> None:
        self._directory = directory

    def _roots(self) -> Sequence[Path]:
        return load_policy().data_roots

    def _path(self, *parts: str) -> Path:
        return confine(str(Path(self._directory, *parts)), self._roots())

    def run_file(self, run_id: str) -> Path:
        return self._path(f"{_file_name(require_safe_run_id(run_id))}.jsonl")

    def _parts(self, run_id: str) -> Path:
        return self._path(f".{_file_name(require_safe_run_id(run_id))}.parts")

    def write(
        self, run_id: str, batch_id: str, table: pa.Table, *, dedupe_keys: Sequence[str] = ()
    ) -> WriteResult:
        if dedupe_keys:
            raise ConfigurationError("jsonl_runs does not dedupe across batches: use a database destination")
        parts = self._parts(run_id)
        part = parts / f"{_file_name(batch_id)}.jsonl"
        if part.exists():
            return WriteResult(applied=False, rows_written=self._count(part), rows_deduplicated=0)
        parts.mkdir(parents=True, exist_ok=True)
        lines = b"".join(json.dumps(row, default=str).encode() + b"\n" for row in table.to_pylist())
        self._write_atomically(part, [lines])
        return WriteResult(applied=True, rows_written=table.num_rows, rows_deduplicated=0)

    def finalize(self, run_id: str) -> None:
        target, parts = self.run_file(run_id), self._parts(run_id)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            files = sorted(parts.glob("*.jsonl")) if parts.is_dir() else []
            chunks = []
            for file in files:
                with open_confined(file, self._roots()) as handle:
                    chunks.append(handle.read())
            self._write_atomically(target, chunks)
        shutil.rmtree(parts, ignore_errors=True)

    def abort(self, run_id: str) -> None:
        if not self.run_file(run_id).exists():
            shutil.rmtree(self._parts(run_id), ignore_errors=True)

    def close(self) -> None:
        pass  # nothing held open between batches

    def _count(self, path: Path) -> int:
        with open_confined(path, self._roots()) as handle:
            return sum(1 for line in handle if line.strip())

    def _write_atomically(self, path: Path, chunks: Sequence[bytes]) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with create_confined(tmp, self._roots()) as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class _Destination:
    """The ``shared.destinations.DestinationKind`` of ``jsonl_runs``."""

    model = JsonlRunsDestination
    description = "one JSONL file per successful run, <path>/<run_id>.jsonl"

    def open(self, destination: JsonlRunsDestination, context: SinkContext) -> JsonlRunsSink:
        return JsonlRunsSink(destination.path)


destination = _Destination()
