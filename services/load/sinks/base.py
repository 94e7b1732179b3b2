"""The sink protocol, re-exported from ``shared.destinations`` where it lives so that destination plugins
depend on ``shared`` only. Every built-in sink implements ``Sink``: each batch is applied exactly once per
destination, identified by its deterministic ``batch_id`` and recorded together with the rows."""

from __future__ import annotations

from shared.destinations import Sink, WriteResult, require_columns

__all__ = ["Sink", "WriteResult", "require_columns"]
