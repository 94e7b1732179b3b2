"""Parquet and JSONL destinations on object storage: one object per batch,
``s3://bucket/prefix/<run_id>/part-<batch_id>.<ext>``, through the destination's declared ``s3`` connection
(``shared.connectors.object_store``: pyarrow's S3 file system, the policy checked at every operation).

S3 has no rename, so the local sinks' temp-file-and-rename becomes: the batch is encoded in memory (one
batch, bounded by ``run.batch_rows``) and written under its deterministic final key by one upload that
S3 makes visible only when it completes (a single PUT, or a multipart upload completed once when the
stream closes; a failed stream is aborted, never completed). The guarantee, exactly:

* a part object is either absent or complete, never partial;
* the object's existence is the ledger: a redelivered batch finds it and writes nothing
  (``applied=False``, the row count read back from the object);
* two deliveries racing past that check (two replicas, a zombie) both write the same key with the same
  bytes (the batch and its encoding are deterministic), so the last write wins with identical content:
  still one object, no duplicate rows;
* ``finalize`` writes ``_SUCCESS`` (row count and part list); readers should only trust prefixes with it.

Cross-batch dedupe keys (a ``dedupe`` step) behave as on the local sink (``run_keys.RunKeys``): before
each batch the run's prefix is listed and the keys of the parts not read yet are read back, the batch's
rows with a key already written are dropped (``rows_deduplicated``), and the part holds the rest. Exact
when a run's batches are written one after another, by any replica (a redelivered batch still writes
nothing); two replicas writing two batches of one run at the same moment can each let the same new key
through once, as for local files: use a database destination when dedupe must hold under concurrent
writers. The race above on one batch's key keeps its guarantee only without dedupe keys (with them, two
racing deliveries may filter against different listings; either object is complete, the last one stays).
"""

from __future__ import annotations

import io
import json
from collections.abc import Hashable, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from services.load.exceptions import DestinationUnavailableError
from services.load.sinks.base import WriteResult, require_columns
from services.load.sinks.naming import safe_file_part
from services.load.sinks.run_keys import FileFormat, RunKeys
from shared.connectors.object_store import filesystem
from shared.policy.errors import PolicyViolation
from shared.policy.s3_urls import S3Url, parse_s3_url
from shared.redaction import scrub

SUCCESS_MARKER = "_SUCCESS"


class ObjectFileSink:
    """Sink for a ``ParquetDestination`` or ``JsonlDestination`` whose path is ``s3://``."""

    def __init__(self, url: str, connection: str | None, file_format: FileFormat) -> None:
        self._base = parse_s3_url(url)
        self._url = url
        self._connection = connection
        self._format: FileFormat = file_format
        self._keys = RunKeys(file_format)

    def _fs(self, url: S3Url) -> pafs.S3FileSystem:
        """Checked again at every operation: the connection, the roots, the endpoint."""
        return filesystem(str(url), self._connection)

    def run_prefix(self, run_id: str) -> S3Url:
        if run_id in ("", ".", ".."):
            raise PolicyViolation(f"run id {run_id!r} cannot name a prefix")
        key = "/".join(p for p in (self._base.key.rstrip("/"), safe_file_part(run_id)) if p)
        return self._base.child(key)

    def part_url(self, run_id: str, batch_id: str) -> S3Url:
        prefix = self.run_prefix(run_id)
        return prefix.child(f"{prefix.key}/part-{safe_file_part(batch_id)}.{self._format}")

    def write(
        self, run_id: str, batch_id: str, table: pa.Table, *, dedupe_keys: Sequence[str] = ()
    ) -> WriteResult:
        require_columns(table, dedupe_keys, "dedupe keys")
        url = self.part_url(run_id, batch_id)
        s3 = self._fs(url)
        name = url.key.rsplit("/", 1)[1]
        try:
            info = s3.get_file_info(url.fs_path)
            if info.type == pafs.FileType.File:  # the first delivery's part: its rows and size
                rows = self._count_rows(s3, url)
                return WriteResult(False, rows_written=rows, rows_deduplicated=0, bytes_written=info.size)
            kept, new_keys = table, set[Hashable]()
            if dedupe_keys:
                kept, new_keys = self._drop_seen_keys(s3, run_id, tuple(dedupe_keys), table)
            data = self._encode(kept)
            self._put(s3, url, data)
        except OSError as exc:  # network, throttling, endpoint down: nothing visible was written
            raise DestinationUnavailableError(f"cannot write {url}: {scrub(str(exc))}") from None
        if dedupe_keys:
            self._keys.remember(run_id, tuple(dedupe_keys), name, new_keys)
        return WriteResult(
            True,
            rows_written=kept.num_rows,
            rows_deduplicated=table.num_rows - kept.num_rows,
            bytes_written=len(data),
        )

    def finalize(self, run_id: str) -> None:
        prefix = self.run_prefix(run_id)
        marker = prefix.child(f"{prefix.key}/{SUCCESS_MARKER}")
        s3 = self._fs(marker)
        try:
            if s3.get_file_info(marker.fs_path).type == pafs.FileType.File:
                return
            parts = self._parts(s3, prefix)
            summary = {
                "run_id": run_id,
                "format": self._format,
                "rows": sum(self._count_rows(s3, p) for p in parts),
                "files": [p.key.rsplit("/", 1)[1] for p in parts],
            }
            self._put(s3, marker, json.dumps(summary, indent=2).encode())
        except OSError as exc:
            raise DestinationUnavailableError(f"cannot finalize {prefix}: {scrub(str(exc))}") from None
        self._keys.forget(run_id)

    def abort(self, run_id: str) -> None:
        """A failed run's parts are deleted, unless the run had already been finalized."""
        prefix = self.run_prefix(run_id)
        s3 = self._fs(prefix)
        try:
            if s3.get_file_info(f"{prefix.fs_path}/{SUCCESS_MARKER}").type == pafs.FileType.File:
                return
            for part in self._parts(s3, prefix):
                s3.delete_file(part.fs_path)
        except OSError as exc:
            raise DestinationUnavailableError(f"cannot abort {prefix}: {scrub(str(exc))}") from None
        finally:
            self._keys.forget(run_id)

    def close(self) -> None:
        self._keys.clear()

    # ---------------------------------------------------------------------------------- internals
    def _encode(self, table: pa.Table) -> bytes:
        buffer = io.BytesIO()
        if self._format == "parquet":
            pq.write_table(table, buffer, compression="zstd")
        else:  # as the local sink: polars writes NDJSON with ISO dates/timestamps and exact decimals
            pl.from_arrow(table).write_ndjson(buffer)  # type: ignore[union-attr]
        return buffer.getvalue()

    @staticmethod
    def _put(s3: pafs.S3FileSystem, url: S3Url, data: bytes) -> None:
        """One upload, visible only once complete; on an error the stream is aborted, not completed."""
        stream = s3.open_output_stream(url.fs_path)
        try:
            stream.write(data)
        except BaseException:
            stream.abort()
            raise
        stream.close()

    def _parts(self, s3: pafs.S3FileSystem, prefix: S3Url) -> list[S3Url]:
        selector = pafs.FileSelector(prefix.fs_path, recursive=False, allow_not_found=True)
        names = [
            info.path.split("/", 1)[1]
            for info in s3.get_file_info(selector)
            if info.type == pafs.FileType.File and info.base_name.startswith("part-")
        ]
        return [prefix.child(key) for key in sorted(names) if key.endswith(f".{self._format}")]

    def _drop_seen_keys(
        self, s3: pafs.S3FileSystem, run_id: str, keys: tuple[str, ...], table: pa.Table
    ) -> tuple[pa.Table, set[Hashable]]:
        prefix = self.run_prefix(run_id)
        parts = {part.key.rsplit("/", 1)[1] for part in self._parts(s3, prefix)}

        def read(name: str) -> bytes:
            with s3.open_input_file(prefix.child(f"{prefix.key}/{name}").fs_path) as handle:
                return bytes(handle.read())

        self._keys.refresh(run_id, keys, parts, read)
        return self._keys.drop_seen(run_id, keys, table)

    def _count_rows(self, s3: pafs.S3FileSystem, url: S3Url) -> int:
        with s3.open_input_file(url.fs_path) as handle:
            if self._format == "parquet":
                return int(pq.ParquetFile(handle).metadata.num_rows)
            return sum(1 for line in handle.read().splitlines() if line.strip())
