"""What every connector provides, and the one batching helper they all share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa
from pydantic import BaseModel

from shared.contracts import Split, SplitKind

# The planner's default granularity when the spec leaves ``parallelism`` open.
DEFAULT_BATCH_ROWS = 50_000
MAX_AUTO_SPLITS = 64


@dataclass(frozen=True)
class ConnectorInfo:
    """How the agent learns what a source type can do: its options are read off the spec model."""

    type: str
    description: str
    split_kinds: tuple[SplitKind, ...]
    options: dict[str, str] = field(default_factory=dict)


def describe(model: type[BaseModel], description: str, split_kinds: tuple[SplitKind, ...]) -> ConnectorInfo:
    """A connector's catalog entry; its options are read off the spec model so they never drift."""
    options: dict[str, str] = {}
    for name, info in model.model_fields.items():
        if name == "type":
            continue
        text = info.description or ""
        default = (
            "required" if info.is_required() else f"default {info.get_default(call_default_factory=True)!r}"
        )
        options[name] = f"{text} ({default})" if text else f"({default})"
    type_name = str(model.model_fields["type"].default)
    return ConnectorInfo(type=type_name, description=description, split_kinds=split_kinds, options=options)


@runtime_checkable
class Connector(Protocol):
    """A source type. Each built-in is one module of ``shared.connectors``; a plugin is the object its
    ``aoetl.sources`` entry point names. ``shared.connectors.registry`` dispatches on ``type``.

    ``model`` validates the spec section (its ``type`` literal is the source type; a plugin's derives from
    ``shared.spec.plugins.PluginSource``); ``info`` is the catalog entry (build it with :func:`describe`).
    ``plan`` runs in the orchestrator and reads metadata only; ``read`` runs in the extract service, one
    split at a time, and yields tables of at most ``batch_rows`` rows, never empty. Both receive the
    validated section and raise ``SourceReadError``/``SourceNotFoundError`` (terminal) or
    ``SourceUnavailableError`` (transient, retried). ``read`` must yield the same rows for the same split
    every time it is called: a retried split is read again from its start."""

    @property
    def model(self) -> type[BaseModel]: ...  # read-only: an implementation narrows it

    info: ConnectorInfo

    def plan(
        self, source: Any, parallelism: int | None, *, payload: bytes | None, batch_rows: int
    ) -> list[Split]: ...

    def read(
        self, source: Any, split: Split, batch_rows: int, *, payload: bytes | None
    ) -> Iterator[pa.Table]: ...


def whole_split(kind: SplitKind = SplitKind.WHOLE, **fields: Any) -> list[Split]:
    return [Split(kind=kind, index=0, count=1, **fields)]


def number_splits(splits: list[dict[str, Any]], kind: SplitKind) -> list[Split]:
    """Give planned ranges their final ``index``/``count`` (only known once every file is planned)."""
    return [Split(kind=kind, index=i, count=len(splits), **fields) for i, fields in enumerate(splits)]


def rebatch(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.Table]:
    """Regroup reader-sized record batches into tables of exactly ``batch_rows`` rows (the last may be
    shorter). Readers produce blocks sized in *bytes*; downstream stages are sized in *rows*. Memory is
    bounded by one output batch plus one input block; empty batches are never yielded."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, batch_rows - pending_rows)
            pending.append(batch.slice(0, take))
            pending_rows += take
            batch = batch.slice(take)
            if pending_rows == batch_rows:
                yield pa.Table.from_batches(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield pa.Table.from_batches(pending)


def allocate(weights: list[int], total: int, caps: list[int]) -> list[int]:
    """Share ``total`` splits among items proportionally to ``weights``: each item gets at least one and
    at most its cap (largest-remainder rounding keeps the result deterministic)."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        return [1] * len(weights)
    ideal = [total * w / weight_sum for w in weights]
    counts = [min(cap, max(1, int(x))) for x, cap in zip(ideal, caps, strict=True)]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(ideal[i] - int(ideal[i])), i))
    leftover = total - sum(counts)
    while leftover > 0:
        growable = [i for i in by_remainder if counts[i] < caps[i]]
        if not growable:
            break
        for i in growable[:leftover]:
            counts[i] += 1
        leftover = total - sum(counts)
    return counts
