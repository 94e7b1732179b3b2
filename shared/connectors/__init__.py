"""Source connectors.

The orchestrator calls :func:`plan_splits` (cheap metadata only: file sizes, Parquet footers, min/max of a
key) and the extract service calls :func:`read_split` for one split at a time. Rows come out as
``pyarrow.Table`` batches of at most ``batch_rows`` rows (never empty), with one schema per run for file
sources. Installed plugins' sources (``shared.plugins``) are planned and read exactly like the built-in
ones, through the same ``Connector`` protocol (``shared.connectors.base``). Errors are
:class:`SourceNotFoundError` / :class:`SourceReadError` (terminal) and :class:`SourceUnavailableError`
(transient).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from shared.connectors.base import DEFAULT_BATCH_ROWS, ConnectorInfo
from shared.connectors.errors import (
    SourceNotFoundError,
    SourceReadError,
    SourceUnavailableError,
    UnsupportedSourceError,
)
from shared.connectors.registry import connector_for, connectors
from shared.contracts import Split
from shared.spec.models import Source

__all__ = [
    "ConnectorInfo",
    "SourceNotFoundError",
    "SourceReadError",
    "SourceUnavailableError",
    "UnsupportedSourceError",
    "connector_catalog",
    "plan_splits",
    "read_split",
]


def plan_splits(
    source: Source,
    parallelism: int | None,
    *,
    payload: bytes | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> list[Split]:
    """Cut the source into independent splits. ``parallelism=None`` lets the connector choose;
    ``batch_rows`` (the spec's ``run.batch_rows``) only sizes PostgreSQL key ranges."""
    if parallelism is not None and parallelism < 1:
        raise ValueError("parallelism must be >= 1")
    return connector_for(source.type).plan(source, parallelism, payload=payload, batch_rows=batch_rows)


def read_split(
    source: Source, split: Split, batch_rows: int, *, payload: bytes | None = None
) -> Iterator[pa.Table]:
    """Stream one split as tables of at most ``batch_rows`` rows, with memory bounded by a batch."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    return connector_for(source.type).read(source, split, batch_rows, payload=payload)


def connector_catalog() -> dict[str, ConnectorInfo]:
    """Every source type the connectors can read, built in or installed plugin, with a description and its
    options (for the agent)."""
    return {name: connector.info for name, connector in connectors().items()}
