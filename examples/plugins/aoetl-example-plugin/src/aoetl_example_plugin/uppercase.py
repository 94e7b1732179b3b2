"""``uppercase``: the given string columns in upper case (a vectorized Arrow kernel, nulls kept)."""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from shared.spec.plugins import PluginStep
from shared.transform.errors import InvalidStepError
from shared.transform.steps import require_columns


class UppercaseStep(PluginStep):
    op: Literal["uppercase"] = "uppercase"
    columns: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, description="string columns")


class _Step:
    """The ``shared.transform.steps.StepKind`` of ``uppercase``."""

    model = UppercaseStep
    description = "upper-case string columns"

    def apply(self, step: UppercaseStep, table: pa.Table, *, where: str) -> pa.Table:
        require_columns(step.columns, table.column_names, where)
        for name in dict.fromkeys(step.columns):
            position = table.schema.get_field_index(name)
            column = table.column(position)
            if pa.types.is_null(column.type):
                continue  # no value to change
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise InvalidStepError(where, f"column {name!r} is {column.type}, not a string")
            table = table.set_column(position, name, pc.utf8_upper(column))
        return table


step = _Step()
