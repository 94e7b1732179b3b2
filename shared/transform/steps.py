"""Transform step types: the protocol every step applied batch by batch implements, built in or plugin.

A :class:`StepKind` is the spec model of its section (``op`` literal; a plugin's derives from
``shared.spec.plugins.PluginStep``), a description for the catalog, and ``apply(step, table, where=...)``,
which returns the transformed batch. ``where`` names the step in the spec (``transforms[2] (uppercase)``)
and belongs in every error it raises. ``apply`` must be a pure function of the step and the batch: it is
called once per batch, again for a redelivered batch, and from several threads.

The built-in Arrow steps (``select``, ``rename``, ``cast``, ``fill``, ``dedupe``) implement it here. The
four DuckDB steps (``filter``, ``derive``, ``mask``, ``sql``) have catalog entries but no ``apply``: the
engine fuses consecutive ones into one query (``shared.transform.engine``), which one-step-at-a-time
application would forbid. Plugin steps come from the ``aoetl.transforms`` entry points
(``shared.plugins``) and run as their own stages, between the fused groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from shared.errors import AoetlError
from shared.plugins import installed
from shared.spec.models import (
    CastStep,
    DedupeStep,
    DeriveStep,
    FillStep,
    FilterStep,
    MaskStep,
    RenameStep,
    SelectStep,
    SqlStep,
)
from shared.transform.casting import cast_columns
from shared.transform.errors import InvalidStepError, UnknownColumnError


@runtime_checkable
class StepKind(Protocol):
    @property
    def model(self) -> type[BaseModel]: ...  # read-only: an implementation narrows it

    @property
    def description(self) -> str: ...

    def apply(self, step: Any, table: pa.Table, *, where: str) -> pa.Table: ...


@dataclass(frozen=True)
class _ArrowStep:
    model: type[BaseModel]
    description: str
    run: Callable[[Any, pa.Table, str], pa.Table]

    def apply(self, step: Any, table: pa.Table, *, where: str) -> pa.Table:
        return self.run(step, table, where)


@dataclass(frozen=True)
class FusedSqlStep:
    """A DuckDB step: described here, compiled by the engine (no ``apply``, see the module docstring)."""

    model: type[BaseModel]
    description: str


def _select(step: SelectStep, table: pa.Table, where: str) -> pa.Table:
    require_columns(step.columns, table.column_names, where)
    reject_duplicates(step.columns, where)
    return table.select(step.columns)


def _rename(step: RenameStep, table: pa.Table, where: str) -> pa.Table:
    require_columns(list(step.mapping), table.column_names, where)
    names = [step.mapping.get(name, name) for name in table.column_names]
    reject_duplicates(names, where)
    return table.rename_columns(names)


def _cast(step: CastStep, table: pa.Table, where: str) -> pa.Table:
    require_columns(list(step.columns), table.column_names, where)
    return cast_columns(table, step.columns, step.formats, where=where)


def _fill_step(step: FillStep, table: pa.Table, where: str) -> pa.Table:
    require_columns(list(step.values), table.column_names, where)
    for name, value in step.values.items():
        position = table.schema.get_field_index(name)
        table = table.set_column(position, name, _fill(table.column(position), value, where, name))
    return table


def _dedupe_step(step: DedupeStep, table: pa.Table, where: str) -> pa.Table:
    require_columns(step.keys, table.column_names, where)
    return _dedupe(table, step.keys)


BUILTIN_STEPS: dict[str, StepKind | FusedSqlStep] = {
    "select": _ArrowStep(SelectStep, "keep these columns, in this order", _select),
    "rename": _ArrowStep(RenameStep, "rename columns (old -> new)", _rename),
    "cast": _ArrowStep(CastStep, "convert columns to a data type", _cast),
    "filter": FusedSqlStep(FilterStep, "keep the rows where a SQL boolean expression is true"),
    "derive": FusedSqlStep(DeriveStep, "add or replace a column computed by a SQL expression"),
    "sql": FusedSqlStep(SqlStep, "a SELECT over the batch (the table named 'batch')"),
    "dedupe": _ArrowStep(DedupeStep, "keep the first row of each key in the batch", _dedupe_step),
    "mask": FusedSqlStep(MaskStep, "hash, redact or partially hide columns"),
    "fill": _ArrowStep(FillStep, "replace nulls by a value per column", _fill_step),
}


def step_kinds() -> dict[str, StepKind | FusedSqlStep]:
    """Every step type: built in, then the installed plugins'."""
    return {**BUILTIN_STEPS, **installed().steps}


def apply_step(step: Any, table: pa.Table, where: str) -> pa.Table:
    """Apply one non-fused step. A plugin's unexpected exception becomes a terminal step error naming the
    step (its text only, never a traceback in a result); the project's own errors pass through."""
    kind = step_kinds().get(step.op)
    if not isinstance(kind, StepKind):
        raise AssertionError(f"not a step applied on its own: {step.op}")
    try:
        result = kind.apply(step, table, where=where)
    except AoetlError:
        raise
    except Exception as exc:
        raise InvalidStepError(where, f"the step failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, pa.Table):
        raise InvalidStepError(where, f"the step returned {type(result).__name__}, not a pyarrow.Table")
    return result


def _fill(values: pa.ChunkedArray, value: object, where: str, name: str) -> pa.ChunkedArray:
    if values.type == pa.null():
        # A column with no type yet (all null) takes the fill value's type.
        return pa.chunked_array([pa.repeat(pa.scalar(value), len(values))])
    try:
        scalar = pa.scalar(value).cast(values.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidStepError(
            where, f"fill value {value!r} does not fit column {name!r} ({values.type}): {exc}"
        ) from exc
    return pc.fill_null(values, scalar)


def _dedupe(table: pa.Table, keys: list[str]) -> pa.Table:
    """Keep the first row of each key combination (nulls compare equal here, as in GROUP BY)."""
    unique_keys = list(dict.fromkeys(keys))
    row = "__row__"
    while row in unique_keys:
        row += "_"
    frame = pl.from_arrow(table.select(unique_keys))
    assert isinstance(frame, pl.DataFrame)
    first_rows = frame.with_row_index(row).unique(subset=unique_keys, keep="first", maintain_order=True)[row]
    if len(first_rows) == table.num_rows:
        return table
    return table.take(first_rows.to_arrow())


def require_columns(wanted: Sequence[str], available: Sequence[str], where: str) -> None:
    present = set(available)
    for name in wanted:
        if name not in present:
            raise UnknownColumnError(where, name, available)


def reject_duplicates(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidStepError(where, f"column {name!r} would appear twice")
        seen.add(name)
