"""Dispatch on ``source.type``. Adding a connector = one module with ``info``, ``plan`` and ``read``."""

from __future__ import annotations

from shared.connectors import csv_files, event, http_api, jsonl_files, parquet_files, postgres
from shared.connectors.base import Connector
from shared.connectors.errors import UnsupportedSourceError

# Typed as the protocol so mypy checks every module's plan/read signatures.
_MODULES: tuple[Connector, ...] = (csv_files, jsonl_files, parquet_files, postgres, http_api, event)
CONNECTORS: dict[str, Connector] = {m.info.type: m for m in _MODULES}


def connector_for(source_type: str) -> Connector:
    try:
        return CONNECTORS[source_type]
    except KeyError:
        hint = (
            " (kafka sources are consumed continuously by the streaming path, not planned into splits)"
            if source_type == "kafka"
            else ""
        )
        raise UnsupportedSourceError(
            f"no connector for source type {source_type!r}; known: {sorted(CONNECTORS)}{hint}"
        ) from None
