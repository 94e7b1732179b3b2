"""Data-quality rules over one ``pyarrow.Table`` batch, each evaluated as one vectorized boolean "bad" mask.

Semantics (documented here because users see them in reports):

* Order: ``quarantine`` rules run first. A row failing any of them leaves ``kept`` and goes to the bucket of
  the *first* quarantine rule (spec order) that caught it, so a row is quarantined and counted once. Then
  ``warn`` and ``fail`` rules are evaluated on the rows that are kept: a quarantined row never reaches the
  destination, so it cannot fail the run.
* Nulls: ``range``, ``regex`` and ``accepted_values`` ignore nulls (``not_null`` is the rule for them);
  ``unique`` ignores rows with a null in any key column (SQL semantics: null is not equal to null).
* ``unique`` is within the batch and flags *every* row of a duplicated key, since no row of the group is
  more right than the others. Uniqueness across batches of a run is the sink's business (merge keys).
* ``range`` needs a numeric column; NaN is outside every range.
* ``regex`` *searches* (anchor with ``^...$`` for a full match), on the text form of the column; the
  engine's regex dialect (Rust ``regex``) has no look-around or back-references.
* ``accepted_values`` compares the text form of the value (``1``, ``1.5``, ``true``).
* ``row_count`` is a run-level rule: ``check_row_count`` is called by the orchestrator with the run's total.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from shared.contracts.outcomes import MAX_SAMPLE_CHARS, MAX_SAMPLES
from shared.spec.quality import (
    AcceptedValuesRule,
    NotNullRule,
    OnFail,
    QualityRule,
    RangeRule,
    RegexRule,
    RowCountRule,
    UniqueRule,
    rule_name,
)
from shared.transform.errors import InvalidRuleError, UnknownColumnError

SAMPLE_ROWS = 5
_MAX_SAMPLE_TEXT = 200

RowRule = NotNullRule | UniqueRule | RangeRule | RegexRule | AcceptedValuesRule


@dataclass(frozen=True)
class Violation:
    rule: str
    on_fail: OnFail
    failed_rows: int
    reason: str
    sample: list[dict[str, object]] = field(default_factory=list)  # JSON-safe, at most SAMPLE_ROWS
    rows_checked: int | None = None  # rows the rule was evaluated on (None: a run-level rule)
    values: list[str] = field(default_factory=list)  # failing values of its columns, see sample_values


@dataclass(frozen=True)
class QualityOutcome:
    kept: pa.Table
    quarantined: list[tuple[Violation, pa.Table]]
    violations: list[Violation]  # every rule that caught at least one row, any on_fail, in spec order
    fail: bool

    @property
    def fail_reasons(self) -> list[str]:
        return [f"{v.rule}: {v.reason}" for v in self.violations if v.on_fail is OnFail.FAIL]


class QualityChecker:
    """Evaluates a spec's row-level quality rules on each batch. Build once per spec."""

    def __init__(self, rules: Sequence[QualityRule]) -> None:
        indexed = [(i, r) for i, r in enumerate(rules) if not isinstance(r, RowCountRule)]
        for index, rule in indexed:
            if isinstance(rule, RegexRule):
                _check_pattern(rule, _rule_location(index, rule))
        self._quarantine = [(i, r) for i, r in indexed if r.on_fail is OnFail.QUARANTINE]
        self._others = [(i, r) for i, r in indexed if r.on_fail is not OnFail.QUARANTINE]

    def check(self, table: pa.Table) -> QualityOutcome:
        violations: dict[int, Violation] = {}
        quarantined: list[tuple[int, Violation, pa.Table]] = []
        kept = table
        if self._quarantine:
            masks = _bad_masks(self._quarantine, table)
            caught = pl.repeat(False, table.num_rows, eager=True)
            for (index, rule), bad in zip(self._quarantine, masks, strict=True):
                bucket = bad & ~caught
                count = int(bucket.sum())
                if count:
                    rows = table.filter(bucket.to_arrow())
                    violation = _violation(rule, count, rows, table.num_rows)
                    violations[index] = violation
                    quarantined.append((index, violation, rows))
                    caught = caught | bucket
            if caught.any():
                kept = table.filter((~caught).to_arrow())
        if self._others:
            for (index, rule), bad in zip(self._others, _bad_masks(self._others, kept), strict=True):
                count = int(bad.sum())
                if count:
                    failing = kept.filter(bad.to_arrow())
                    violations[index] = _violation(rule, count, failing, kept.num_rows)
        ordered = [violations[i] for i in sorted(violations)]
        return QualityOutcome(
            kept=kept,
            quarantined=[(v, rows) for _, v, rows in quarantined],
            violations=ordered,
            fail=any(v.on_fail is OnFail.FAIL for v in ordered),
        )


def check_row_count(rules: Sequence[QualityRule], total_rows: int) -> list[Violation]:
    """Run-level ``row_count`` rules against the run's total; other rules are ignored."""
    found: list[Violation] = []
    for rule in rules:
        if not isinstance(rule, RowCountRule):
            continue
        reason = None
        if rule.min is not None and total_rows < rule.min:
            reason = f"run produced {total_rows} rows, expected at least {rule.min}"
        elif rule.max is not None and total_rows > rule.max:
            reason = f"run produced {total_rows} rows, expected at most {rule.max}"
        if reason:
            found.append(Violation(rule_name(rule), rule.on_fail, total_rows, reason, []))
    return found


# ------------------------------------------------------------------------------------------ masks
def _rule_location(index: int, rule: QualityRule) -> str:
    return f"quality[{index}] ({rule_name(rule)})"


def _columns_of(rule: RowRule) -> list[str]:
    return list(rule.columns) if isinstance(rule, NotNullRule | UniqueRule) else [rule.column]


def _bad_masks(rules: list[tuple[int, RowRule]], table: pa.Table) -> list[pl.Series]:
    """One boolean Series per rule (True = the row breaks the rule), computed in one polars pass over
    only the columns the rules read."""
    needed: dict[str, None] = {}
    for index, rule in rules:
        for name in _columns_of(rule):
            if name not in table.column_names:
                raise UnknownColumnError(_rule_location(index, rule), name, table.column_names)
            needed[name] = None
    frame = pl.from_arrow(table.select(list(needed)))
    assert isinstance(frame, pl.DataFrame)
    exprs = [
        _bad_expr(rule, frame.schema, _rule_location(index, rule)).fill_null(False).alias(f"r{n}")
        for n, (index, rule) in enumerate(rules)
    ]
    result = frame.select(exprs)
    return [result[f"r{n}"].cast(pl.Boolean) for n in range(len(rules))]


def _bad_expr(rule: RowRule, schema: pl.Schema, where: str) -> pl.Expr:
    if isinstance(rule, NotNullRule):
        return pl.any_horizontal([pl.col(c).is_null() for c in rule.columns])
    if isinstance(rule, UniqueRule):
        keys = list(dict.fromkeys(rule.columns))
        present = pl.all_horizontal([pl.col(c).is_not_null() for c in keys])
        # A row with a null key can only equal other rows with a null key, so masking is enough.
        return present & pl.struct(keys).is_duplicated()
    column = pl.col(rule.column)
    dtype = schema[rule.column]
    if isinstance(rule, RangeRule):
        if not dtype.is_numeric():
            raise InvalidRuleError(where, f"range needs a numeric column; {rule.column!r} is {dtype}")
        outside = pl.lit(False)
        if rule.min is not None:
            outside = outside | (column < rule.min)
        if rule.max is not None:
            outside = outside | (column > rule.max)
        if dtype.is_float():
            outside = outside | column.is_nan()
        return column.is_not_null() & outside
    text = column.cast(pl.String)
    if isinstance(rule, RegexRule):
        return column.is_not_null() & ~text.str.contains(rule.pattern)
    return column.is_not_null() & ~text.is_in(rule.values)


def _check_pattern(rule: RegexRule, where: str) -> None:
    """Python's ``re`` accepted the pattern at spec validation; make sure the vectorized engine does too."""
    try:
        pl.Series([""], dtype=pl.String).str.contains(rule.pattern)
    except pl.exceptions.PolarsError as exc:
        raise InvalidRuleError(where, f"pattern not supported by the vectorized regex engine: {exc}") from exc


# -------------------------------------------------------------------------------------- reporting
def _violation(rule: RowRule, count: int, rows: pa.Table, checked: int) -> Violation:
    return Violation(
        rule_name(rule),
        rule.on_fail,
        count,
        _reason(rule, count),
        _sample(rows),
        rows_checked=checked,
        values=sample_values(rows, _columns_of(rule)),
    )


def rule_columns(rule: QualityRule) -> list[str]:
    """The columns a rule reads (none for a run-level ``row_count``)."""
    return [] if isinstance(rule, RowCountRule) else list(dict.fromkeys(_columns_of(rule)))


def sample_values(rows: pa.Table, columns: Sequence[str]) -> list[str]:
    """The first ``MAX_SAMPLES`` failing rows as text, only the rule's columns (one: the value, several:
    ``a=1, b=null``), each cut to ``MAX_SAMPLE_CHARS``: they end in a run's result, a report whose size
    must not depend on the data, and which need show nothing of a row but what broke the rule."""
    columns = list(dict.fromkeys(columns))
    shown: list[str] = []
    for row in rows.select(columns).slice(0, MAX_SAMPLES).to_pylist():
        texts = [_text(row[c]) for c in columns]
        text = (
            texts[0]
            if len(columns) == 1
            else ", ".join(f"{c}={t}" for c, t in zip(columns, texts, strict=True))
        )
        shown.append(text if len(text) <= MAX_SAMPLE_CHARS else text[: MAX_SAMPLE_CHARS - 3] + "...")
    return shown


def _text(value: object) -> str:
    safe = _json_safe(value)
    return "null" if safe is None else str(safe).lower() if isinstance(safe, bool) else str(safe)


def _reason(rule: RowRule, count: int) -> str:
    rows = f"{count} row{'s' if count != 1 else ''}"
    if isinstance(rule, NotNullRule):
        return f"{rows} with null in {', '.join(rule.columns)}"
    if isinstance(rule, UniqueRule):
        return f"{rows} with a duplicated ({', '.join(rule.columns)})"
    if isinstance(rule, RangeRule):
        low = "-inf" if rule.min is None else _number(rule.min)
        high = "+inf" if rule.max is None else _number(rule.max)
        return f"{rows} with {rule.column} outside [{low}, {high}]"
    if isinstance(rule, RegexRule):
        return f"{rows} with {rule.column} not matching /{rule.pattern}/"
    shown = ", ".join(repr(v) for v in rule.values[:10]) + (", ..." if len(rule.values) > 10 else "")
    return f"{rows} with {rule.column} not in [{shown}]"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _sample(rows: pa.Table) -> list[dict[str, object]]:
    return [{k: _json_safe(v) for k, v in row.items()} for row in rows.slice(0, SAMPLE_ROWS).to_pylist()]


def _json_safe(value: object) -> object:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_SAMPLE_TEXT else value[:_MAX_SAMPLE_TEXT] + "..."
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value[:_MAX_SAMPLE_TEXT].hex()
    return _json_safe(str(value))
