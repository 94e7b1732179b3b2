"""Dispatch on ``source.type``: the built-in connectors (one module each with ``model``, ``info``, ``plan``
and ``read``) and the installed plugins' (``aoetl.sources`` entry points, ``shared.plugins``), both the
same ``Connector`` protocol."""

from __future__ import annotations

from shared.connectors import csv_files, event, http_api, jsonl_files, parquet_files, postgres
from shared.connectors.base import Connector
from shared.connectors.errors import UnsupportedSourceError
from shared.plugins import installed

# Typed as the protocol so mypy checks every module's plan/read signatures.
_MODULES: tuple[Connector, ...] = (csv_files, jsonl_files, parquet_files, postgres, http_api, event)
BUILTIN_CONNECTORS: dict[str, Connector] = {m.info.type: m for m in _MODULES}


def connectors() -> dict[str, Connector]:
    """Every source type a split can be planned and read for: built in, then installed plugins."""
    return {**BUILTIN_CONNECTORS, **installed().sources}


def connector_for(source_type: str) -> Connector:
    try:
        return connectors()[source_type]
    except KeyError:
        hint = (
            " (kafka sources are consumed continuously by the streaming path, not planned into splits)"
            if source_type == "kafka"
            else ""
        )
        raise UnsupportedSourceError(
            f"no connector for source type {source_type!r}; known: {sorted(connectors())}{hint}"
        ) from None
