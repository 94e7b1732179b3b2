"""Spec changes for the spec-changing remedies, each validated by ``parse_spec`` before it is returned.

* ``QUARANTINE_BAD_ROWS`` for a failed quality rule: the rule's ``on_fail`` becomes ``quarantine``, so the
  offending rows go to the dead-letter topic and the rest load (``row_count`` cannot quarantine);
* ``ADD_CAST`` for a ``CastError``: the bad values as the error describes them (never the values
  themselves, see ``shared.transform.casting``) decide the fix - NA markers are read as null,
  dates/timestamps in another known format are parsed by a ``derive`` that tries every format, an int64
  column with decimals becomes float64. Anything else is not guessed at: not applicable;
* ``EVOLVE_DESTINATION`` for an ``IncompatibleSchemaError``: a table destination is rewritten with the new
  schema (mode ``replace``, an atomic swap at the end of the run). It drops the table's previous rows, which
  is why the default policy does not allow it.

``RETRY_WITH_BACKOFF`` and ``FAIL`` do not change the spec: it is returned as is.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from services.orchestrator.exceptions import RemedyNotAllowedError, RemedyNotApplicableError
from services.orchestrator.healing.policy import HealingPolicy, Remedy, RemedyKind
from shared.agent.inference import DATE_FORMATS, ISO_DATE, NA_MARKERS, TIMESTAMP_FORMATS
from shared.agent.suggest import compact_dump
from shared.contracts import ErrorInfo
from shared.spec import parse_spec
from shared.spec.models import (
    CastStep,
    CsvSource,
    DataType,
    DeriveStep,
    DuckDBDestination,
    PipelineSpec,
    PostgresDestination,
    TransformStep,
    WriteMode,
)
from shared.spec.quality import OnFail, RowCountRule, rule_name
from shared.sql import quote_ident

_CAST_ERROR = re.compile(
    r"^transforms\[(?P<index>\d+)\] \(cast\): cannot cast column '(?P<column>[^']+)' to (?P<target>\w+): "
    r"\d+ bad value\(s\), e\.g\. (?P<examples>.*)$",
    re.DOTALL,
)
# One described bad value: a quoted null marker, or a <description> (casting.describe_bad_value).
_EXAMPLE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|<[^>]*>")
_KNOWN_FORMATS = re.compile(r"^<(?:date|timestamp) in a known format: (?P<formats>.*)>$")
_DECIMAL = "<a decimal number>"


def apply_remedy(
    spec: PipelineSpec, remedy: Remedy, error: ErrorInfo, *, policy: HealingPolicy | None = None
) -> PipelineSpec:
    """The spec changed by ``remedy`` for ``error``. Raises ``RemedyNotAllowedError`` when ``policy`` does
    not allow it and ``RemedyNotApplicableError`` when it does not fit the error or the spec."""
    if policy is not None and not policy.allows(remedy.kind):
        raise RemedyNotAllowedError(f"{remedy.kind.value} is not allowed by the healing policy")
    if not remedy.changes_spec:
        return spec
    if remedy.kind is RemedyKind.QUARANTINE_BAD_ROWS:
        data = _quarantine(spec, error)
    elif remedy.kind is RemedyKind.ADD_CAST:
        data = _add_cast(spec, error)
    else:
        data = _evolve(spec, error)
    return parse_spec(data)  # a remedy must never produce a spec the services would refuse


# ---------------------------------------------------------------------------------------- quarantine
def _quarantine(spec: PipelineSpec, error: ErrorInfo) -> dict[str, Any]:
    if error.error_class != "QualityRuleFailed":
        raise RemedyNotApplicableError(
            f"rows can only be quarantined by a quality rule; {error.error_class} is not one"
        )
    name = error.path or error.message.split(": ", 1)[0]
    for index, rule in enumerate(spec.quality):
        if rule_name(rule) != name:
            continue
        if isinstance(rule, RowCountRule):
            raise RemedyNotApplicableError(
                f"{name} is checked over the whole run: there are no rows to quarantine"
            )
        if rule.on_fail is OnFail.QUARANTINE:
            raise RemedyNotApplicableError(f"{name} already quarantines its rows")
        data = compact_dump(spec)
        data["quality"][index]["on_fail"] = OnFail.QUARANTINE.value
        return data
    raise RemedyNotApplicableError(f"no quality rule named {name!r} in the spec")


# ------------------------------------------------------------------------------------------ add cast
def _add_cast(spec: PipelineSpec, error: ErrorInfo) -> dict[str, Any]:
    match = _CAST_ERROR.match(error.message) if error.error_class == "CastError" else None
    if match is None:
        raise RemedyNotApplicableError(
            f"ADD_CAST needs a CastError naming the column; got {error.error_class}"
        )
    index, column, target = int(match["index"]), match["column"], DataType(match["target"])
    examples = _EXAMPLE.findall(match["examples"])
    if not examples:
        raise RemedyNotApplicableError(f"cannot read the bad values of {column!r}")
    step = spec.transforms[index] if index < len(spec.transforms) else None
    if not isinstance(step, CastStep) or column not in step.columns:
        raise RemedyNotApplicableError(f"transforms[{index}] is not a cast of {column!r}")
    data = compact_dump(spec)
    markers = [_marker(e) for e in examples]
    if all(m is not None and m.strip().lower() in NA_MARKERS for m in markers):
        return _read_as_null(spec, data, index, column, [m for m in markers if m is not None])
    if target in (DataType.DATE, DataType.TIMESTAMP):
        fmt = _format_of(examples, target)
        if fmt is not None:
            current = step.formats.get(column) or (ISO_DATE if target is DataType.DATE else None)
            return _parse_with_formats(spec, data, index, column, target, [f for f in (current, fmt) if f])
    if target is DataType.INT64 and all(e == _DECIMAL for e in examples):
        data["transforms"][index]["columns"][column] = DataType.FLOAT64.value
        return data
    raise RemedyNotApplicableError(
        f"the bad values of {column!r} ({', '.join(examples)}) are not NA markers or a known format"
    )


def _marker(example: str) -> str | None:
    """The text of a quoted example (only null markers are shown as written), None for a description."""
    if example.startswith("<"):
        return None
    try:
        return str(ast.literal_eval(example))
    except (ValueError, SyntaxError):
        return None


def _read_as_null(
    spec: PipelineSpec, data: dict[str, Any], index: int, column: str, markers: list[str]
) -> dict[str, Any]:
    if isinstance(spec.source, CsvSource):
        data["source"]["null_values"] = sorted(set(spec.source.null_values) | set(markers))
        return data
    listed = ", ".join("'" + m.strip().replace("'", "''") + "'" for m in sorted(set(markers)))
    ident = quote_ident(column)
    nulling = DeriveStep(
        column=column,
        expr=f"CASE WHEN trim(CAST({ident} AS VARCHAR)) IN ({listed}) THEN NULL ELSE {ident} END",
    )
    data["transforms"].insert(index, compact_dump(nulling))
    return data


def _parse_with_formats(
    spec: PipelineSpec, data: dict[str, Any], index: int, column: str, target: DataType, formats: list[str]
) -> dict[str, Any]:
    """The column leaves the cast step; a derive right after it tries each format in turn."""
    if any("%.f" in f for f in formats):
        raise RemedyNotApplicableError(
            f"{column!r}: fractional-second formats cannot be combined in one derive"
        )
    text = f"trim(CAST({quote_ident(column)} AS VARCHAR))"
    tries = ", ".join("try_strptime(" + text + ", '" + f + "')" for f in formats)
    sql_type = "DATE" if target is DataType.DATE else "TIMESTAMP"
    derive: TransformStep = DeriveStep(column=column, expr=f"CAST(COALESCE({tries}) AS {sql_type})")
    cast = data["transforms"][index]
    del cast["columns"][column]
    cast.get("formats", {}).pop(column, None)
    if cast["columns"]:
        data["transforms"].insert(index + 1, compact_dump(derive))
    else:
        data["transforms"][index] = compact_dump(derive)
    return data


def _format_of(examples: list[str], target: DataType) -> str | None:
    """The first known format (in the candidates' order) that every bad value parses with."""
    candidates = DATE_FORMATS if target is DataType.DATE else TIMESTAMP_FORMATS
    common = set(candidates)
    for example in examples:
        known = _KNOWN_FORMATS.match(example)
        if known is None:
            return None
        common &= {f.strip() for f in known["formats"].split(" | ")}
    return next((fmt for fmt in candidates if fmt in common), None)


# ------------------------------------------------------------------------------------------- evolve
def _evolve(spec: PipelineSpec, error: ErrorInfo) -> dict[str, Any]:
    if error.error_class != "IncompatibleSchemaError":
        raise RemedyNotApplicableError(
            f"EVOLVE_DESTINATION fits IncompatibleSchemaError, not {error.error_class}"
        )
    destination = spec.destination
    if not isinstance(destination, PostgresDestination | DuckDBDestination):
        raise RemedyNotApplicableError(f"a {destination.type} destination has no table schema to evolve")
    if destination.mode is WriteMode.REPLACE:
        raise RemedyNotApplicableError("the destination is already rewritten on every run (mode replace)")
    data = compact_dump(spec)
    data["destination"]["mode"] = WriteMode.REPLACE.value
    return data
