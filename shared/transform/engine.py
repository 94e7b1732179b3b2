"""The vectorized transform engine: a spec's ``transforms`` applied to one ``pyarrow.Table`` batch.

How steps run (all vectorized; no Python loop over rows anywhere):

* ``select``, ``rename``, ``fill``: pyarrow, zero-copy or a single kernel per column, types untouched
  (these, ``cast``, ``dedupe`` and installed plugin steps are ``StepKind``s applied one at a time,
  ``shared.transform.steps``);
* ``cast``: polars (see ``casting.py`` for the exact conversion rules);
* ``dedupe``: polars finds the first row of each key in the batch, pyarrow takes those rows. Duplicates
  *across* batches of a run are the sink's business (merge keys), not the engine's;
* ``filter``, ``derive``, ``mask``, ``sql``: DuckDB, over the batch registered as ``batch`` on one sandboxed
  in-memory connection per engine (see ``expressions.py`` for the SQL safety rules).

Consecutive DuckDB steps are fused into one query (nested sub-selects), because each trip through DuckDB
materializes a full Arrow result: ``filter`` + ``derive`` + ``derive`` costs one scan and one result
instead of three, and DuckDB's optimizer pushes the filter below the projections. A ``sql`` step starts a
new fused group (its ``FROM batch`` must mean the step's input); steps after it fuse on top of it. The cost
of fusion is that a *data* error at run time (e.g. a failing cast inside an expression) names the group of
steps rather than the single step; configuration errors (unknown columns, bad SQL) still name the step,
because each step's query is bound on its own when the group is first built for a table schema.

The engine is compiled once per spec (SQL parsed and checked in ``__init__``) and then reused for every
batch; built queries are cached per input schema. ``apply`` is thread-safe (the DuckDB connection is used
under a lock). Each DuckDB run of a batch is bounded by the sandbox's time limit (``SandboxLimits``, from
the spec policy by default): past it the query is interrupted and the batch fails with
``SandboxLimitError``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import duckdb
import pyarrow as pa

from shared.policy.settings import load_policy
from shared.spec.models import (
    DeriveStep,
    FilterStep,
    MaskStep,
    SqlStep,
    TransformStep,
)
from shared.sql import quote_ident
from shared.transform.deadlines import QUERY_DEADLINES
from shared.transform.errors import SandboxLimitError
from shared.transform.expressions import (
    BATCH,
    SandboxLimits,
    check_expression,
    check_query,
    mask_sql,
    open_sandbox,
    translate_error,
)
from shared.transform.steps import apply_step, reject_duplicates, require_columns

# Only a fallback for tests and local runs: the service passes a secret salt from its settings, otherwise
# hashed values could be reversed by hashing a dictionary of candidates with this public constant.
DEFAULT_MASK_SALT = b"aoetl-default-mask-salt"

_SQL_OPS = (FilterStep, DeriveStep, MaskStep, SqlStep)
_MAX_CACHED_SCHEMAS = 32


def step_location(index: int, step: TransformStep) -> str:
    """How errors name a step: its path in the spec and its op."""
    return f"transforms[{index}] ({step.op})"


@dataclass(frozen=True)
class _SqlGroup:
    """Consecutive DuckDB steps run as one query."""

    steps: tuple[tuple[int, TransformStep], ...]

    @property
    def where(self) -> str:
        if len(self.steps) == 1:
            return step_location(*self.steps[0])
        first, last = self.steps[0][0], self.steps[-1][0]
        ops = ", ".join(step.op for _, step in self.steps)
        return f"transforms[{first}..{last}] ({ops})"


_Stage = tuple[int, TransformStep] | _SqlGroup


class TransformEngine:
    """Applies a spec's transform steps to Arrow tables. Build once per spec, reuse per batch."""

    def __init__(
        self,
        steps: Sequence[TransformStep],
        *,
        mask_salt: bytes = DEFAULT_MASK_SALT,
        limits: SandboxLimits | None = None,
    ) -> None:
        """``limits``: what the DuckDB may use; default: this process's spec policy."""
        self._steps = tuple(steps)
        self._salt = mask_salt
        self._limits = limits or SandboxLimits.from_policy(load_policy())
        self._conn = open_sandbox(self._limits)
        self._lock = threading.Lock()
        self._queries: OrderedDict[tuple[int, pa.Schema], str] = OrderedDict()
        for index, step in enumerate(self._steps):
            if isinstance(step, FilterStep | DeriveStep):
                check_expression(step.expr, step_location(index, step))
            elif isinstance(step, SqlStep):
                check_query(self._conn, step.query, step_location(index, step))
        self._stages = _plan(self._steps)

    @property
    def steps(self) -> tuple[TransformStep, ...]:
        return self._steps

    def apply(self, table: pa.Table) -> pa.Table:
        for position, stage in enumerate(self._stages):
            if isinstance(stage, _SqlGroup):
                table = self._run_sql(position, stage, table)
            else:
                index, step = stage
                table = apply_step(step, table, step_location(index, step))
        return table

    def output_columns(self, input_columns: Sequence[str] | pa.Schema) -> list[str]:
        """The columns the steps produce from these input columns, checked without any data.

        Raises ``UnknownColumnError`` / ``InvalidExpressionError`` / ``InvalidStepError`` exactly as
        ``apply`` would. With only names, columns are typed as SQL NULL (which fits any expression); give a
        ``pa.Schema`` to check types too.
        """
        if isinstance(input_columns, pa.Schema):
            schema = input_columns
        else:
            reject_duplicates(list(input_columns), "input columns")
            schema = pa.schema([(name, pa.null()) for name in input_columns])
        return self.apply(schema.empty_table()).column_names

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ DuckDB
    def _run_sql(self, position: int, group: _SqlGroup, table: pa.Table) -> pa.Table:
        with self._lock:
            self._conn.register(BATCH, table)
            try:
                query = self._query_for(position, group, table.schema)
                # Interrupts the query from another thread past the limit (DuckDB has no timeout setting).
                try:
                    with QUERY_DEADLINES.deadline(self._limits.timeout_s, self._conn.interrupt):
                        result = self._conn.sql(query).to_arrow_table()
                except duckdb.InterruptException as exc:
                    raise SandboxLimitError(
                        group.where,
                        f"the batch took longer than {self._limits.timeout_s:g} s in the transform "
                        "(AOETL_POLICY_TRANSFORM_TIMEOUT_S); lower run.batch_rows or simplify the step",
                    ) from exc
                except duckdb.Error as exc:
                    raise translate_error(exc, group.where, table.column_names) from exc
            finally:
                self._conn.unregister(BATCH)
        return _restore_passthrough_types(result, table.schema)

    def _query_for(self, position: int, group: _SqlGroup, schema: pa.Schema) -> str:
        key = (position, schema)
        query = self._queries.get(key)
        if query is None:
            query = self._build_query(group, schema.names)
            self._queries[key] = query
            if len(self._queries) > _MAX_CACHED_SCHEMAS:
                self._queries.popitem(last=False)
        return query

    def _build_query(self, group: _SqlGroup, input_columns: list[str]) -> str:
        """Nest each step's SELECT around the previous one, binding after each step so that an error
        names the step that caused it."""
        query = f"SELECT * FROM {BATCH}"
        columns = input_columns
        for index, step in group.steps:
            where = step_location(index, step)
            query = self._step_sql(step, query, columns, where)
            try:
                columns = list(self._conn.sql(query).columns)
            except duckdb.Error as exc:
                raise translate_error(exc, where, columns) from exc
        return query

    def _step_sql(self, step: TransformStep, inner: str, columns: list[str], where: str) -> str:
        if isinstance(step, SqlStep):
            return step.query  # always first in its group: ``batch`` is exactly its input
        if isinstance(step, FilterStep):
            return f"SELECT * FROM ({inner}) WHERE ({step.expr})"
        if isinstance(step, DeriveStep):
            target = quote_ident(step.column)
            if step.column in columns:
                return f"SELECT * REPLACE (({step.expr}) AS {target}) FROM ({inner})"
            return f"SELECT *, ({step.expr}) AS {target} FROM ({inner})"
        if isinstance(step, MaskStep):
            require_columns(step.columns, columns, where)
            masked = ", ".join(
                f"{mask_sql(name, step.method, self._salt)} AS {quote_ident(name)}"
                for name in dict.fromkeys(step.columns)
            )
            return f"SELECT * REPLACE ({masked}) FROM ({inner})"
        raise AssertionError(f"not a DuckDB step: {step.op}")


class EngineCache:
    """One compiled engine per distinct transform list (LRU), so a service reuses its DuckDB connection and
    built queries across the batches of a pipeline."""

    def __init__(
        self,
        *,
        mask_salt: bytes = DEFAULT_MASK_SALT,
        max_engines: int = 32,
        limits: SandboxLimits | None = None,
    ) -> None:
        self._salt = mask_salt
        self._limits = limits
        self._max = max_engines
        self._engines: OrderedDict[str, TransformEngine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, steps: Sequence[TransformStep]) -> TransformEngine:
        key = json.dumps([step.model_dump(mode="json") for step in steps], sort_keys=True)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
        engine = TransformEngine(steps, mask_salt=self._salt, limits=self._limits)  # may raise: not cached
        with self._lock:
            self._engines[key] = engine
            while len(self._engines) > self._max:
                self._engines.popitem(last=False)[1].close()
        return engine

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()


# ----------------------------------------------------------------------------------------- planning
def _plan(steps: Sequence[TransformStep]) -> list[_Stage]:
    stages: list[_Stage] = []
    group: list[tuple[int, TransformStep]] = []
    for index, step in enumerate(steps):
        if isinstance(step, _SQL_OPS):
            if isinstance(step, SqlStep) and group:
                stages.append(_SqlGroup(tuple(group)))
                group = []
            group.append((index, step))
            continue
        if group:
            stages.append(_SqlGroup(tuple(group)))
            group = []
        stages.append((index, step))
    if group:
        stages.append(_SqlGroup(tuple(group)))
    return stages


def _restore_passthrough_types(result: pa.Table, before: pa.Schema) -> pa.Table:
    """DuckDB hands back ``string`` for ``large_string``/``string_view`` and timestamps in UTC; put back
    the input's exact type for columns that only differ that way, so a batch keeps its schema."""
    for position, field in enumerate(result.schema):
        index = before.get_field_index(field.name)
        if index < 0:
            continue
        original = before.field(index).type
        if original != field.type and _same_family(original, field.type):
            result = result.set_column(position, field.name, result.column(position).cast(original))
    return result


def _same_family(a: pa.DataType, b: pa.DataType) -> bool:
    def is_text(t: pa.DataType) -> bool:
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))

    if is_text(a) and is_text(b):
        return True
    return bool(
        pa.types.is_timestamp(a)
        and pa.types.is_timestamp(b)
        and a.unit == b.unit
        and a.tz is not None
        and b.tz is not None
    )
