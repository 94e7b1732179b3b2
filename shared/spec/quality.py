"""A spec's data-quality rules (its ``quality:`` list) and what a failed one does to the run (``OnFail``).

The rules are declarations only; ``shared.transform.quality`` evaluates them on each batch (``row_count``
once over the whole run). Like every spec model they are strict (``shared.spec.base``), and the union is
discriminated by ``rule`` so that a validation error names the rule and field that is wrong. A rule's
name defaults to ``<rule>:<columns>`` (``rule_name``): the name that events, alerts and dead letters carry,
so it must stay stable for a given rule.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from shared.spec.base import StrictModel


class OnFail(StrEnum):
    """What a failed data-quality rule does to the run."""

    FAIL = "fail"  # the run ends FAILED
    QUARANTINE = "quarantine"  # offending rows go to the dead-letter topic, the rest continue
    WARN = "warn"  # recorded as an event and alert, rows continue


class _Rule(StrictModel):
    name: str | None = Field(None, description="defaults to '<rule>:<columns>'")
    on_fail: OnFail = OnFail.FAIL


class NotNullRule(_Rule):
    rule: Literal["not_null"] = "not_null"
    columns: list[str] = Field(min_length=1)


class UniqueRule(_Rule):
    rule: Literal["unique"] = "unique"
    columns: list[str] = Field(min_length=1)


class RangeRule(_Rule):
    rule: Literal["range"] = "range"
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is greater than 'max'")
        return self


class RegexRule(_Rule):
    rule: Literal["regex"] = "regex"
    column: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return v


class AcceptedValuesRule(_Rule):
    rule: Literal["accepted_values"] = "accepted_values"
    column: str
    values: list[str] = Field(min_length=1)


class RowCountRule(_Rule):
    """Checked over the whole run, so it can only fail or warn (there is no row to quarantine)."""

    rule: Literal["row_count"] = "row_count"
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _no_quarantine(self) -> RowCountRule:
        if self.on_fail is OnFail.QUARANTINE:
            raise ValueError("row_count cannot quarantine rows; use 'fail' or 'warn'")
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        return self


QualityRule = Annotated[
    NotNullRule | UniqueRule | RangeRule | RegexRule | AcceptedValuesRule | RowCountRule,
    Field(discriminator="rule"),
]


def rule_name(
    rule: NotNullRule | UniqueRule | RangeRule | RegexRule | AcceptedValuesRule | RowCountRule,
) -> str:
    if rule.name:
        return rule.name
    cols = getattr(rule, "columns", None) or [getattr(rule, "column", "")]
    return f"{rule.rule}:{','.join(c for c in cols if c)}" if any(cols) else rule.rule
