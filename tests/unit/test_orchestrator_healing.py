"""Self-healing: classification, decisions within the policy, and spec changes that really heal."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from services.load.exceptions import IncompatibleSchemaError
from services.orchestrator.exceptions import RemedyNotAllowedError, RemedyNotApplicableError
from services.orchestrator.healing.policy import (
    ErrorCategory,
    HealingPolicy,
    Remedy,
    RemedyKind,
    classify,
    decide,
)
from services.orchestrator.healing.remedies import apply_remedy
from shared.agent.suggest import dry_run
from shared.connectors import SourceUnavailableError
from shared.contracts import ErrorInfo
from shared.errors import ConfigurationError
from shared.spec import parse_spec
from shared.spec.models import CastStep, CsvSource, DeriveStep, OnFail, PipelineSpec, WriteMode
from shared.transform.engine import TransformEngine
from shared.transform.errors import CastError, UnknownColumnError
from shared.transform.quality import QualityChecker

pytestmark = pytest.mark.unit

ALL = frozenset(RemedyKind)


def spec(**overrides: Any) -> PipelineSpec:
    data: dict[str, Any] = {
        "name": "orders",
        "source": {"type": "csv", "path": "orders.csv"},
        "transforms": [{"op": "cast", "columns": {"id": "int64", "day": "date", "qty": "int64"}}],
        "quality": [
            {"rule": "accepted_values", "column": "status", "values": ["ok"]},
            {"rule": "row_count", "min": 1},
        ],
        "destination": {"type": "postgres", "table": "orders"},
    }
    data.update(overrides)
    return parse_spec(data)


def cast_failure(table: pa.Table, s: PipelineSpec) -> ErrorInfo:
    with pytest.raises(CastError) as caught, TransformEngine(s.transforms) as engine:
        engine.apply(table)
    return ErrorInfo.from_exception(caught.value)


def rows(**columns: list[Any]) -> pa.Table:
    base = {
        "id": ["1", "2", "3"],
        "day": ["2024-01-05", "2024-01-06", "2024-01-07"],
        "qty": ["1", "2", "3"],
        "status": ["ok"] * 3,
    }
    base.update(columns)
    return pa.table({k: pa.array(v, pa.string()) for k, v in base.items()})


# ------------------------------------------------------------------------------------------ classify
@pytest.mark.parametrize(
    ("error", "category"),
    [
        (
            ErrorInfo.from_exception(CastError("transforms[0] (cast)", "a", "int64", 1, ["x"])),
            ErrorCategory.DATA,
        ),
        (
            ErrorInfo.from_exception(IncompatibleSchemaError("t", "a", "bigint", "string")),
            ErrorCategory.SCHEMA,
        ),
        (ErrorInfo.from_exception(SourceUnavailableError("refused")), ErrorCategory.TRANSIENT),
        (
            ErrorInfo.from_exception(UnknownColumnError("transforms[1] (filter)", "x", ["a"])),
            ErrorCategory.CONFIG,
        ),
        (ErrorInfo.from_exception(ConfigurationError("AOETL_POSTGRES_DSN is not set")), ErrorCategory.CONFIG),
        (ErrorInfo(error_class="QualityRuleFailed", message="range:amount: 3 rows"), ErrorCategory.DATA),
        (
            ErrorInfo(error_class="SomeDriverError", message="server busy", transient=True),
            ErrorCategory.TRANSIENT,
        ),
        (ErrorInfo(error_class="ValueError", message="cannot cast 'x' to integer"), ErrorCategory.DATA),
        (ErrorInfo(error_class="ValueError", message="connection refused by host"), ErrorCategory.TRANSIENT),
        (ErrorInfo(error_class="KeyError", message="'foo'"), ErrorCategory.CONFIG),
    ],
)
def test_classify(error: ErrorInfo, category: ErrorCategory) -> None:
    assert classify(error) is category


# -------------------------------------------------------------------------------------------- decide
def test_decisions_by_category_with_everything_allowed() -> None:
    policy = HealingPolicy(allowed=ALL)
    retry = decide(ErrorCategory.TRANSIENT, policy, 2)
    assert retry.kind is RemedyKind.RETRY_WITH_BACKOFF and retry.delay_s == 4.0
    assert decide(ErrorCategory.SCHEMA, policy, 0).kind is RemedyKind.EVOLVE_DESTINATION
    assert decide(ErrorCategory.CONFIG, policy, 0).kind is RemedyKind.FAIL
    cast = ErrorInfo(error_class="CastError", message="...")
    assert decide(ErrorCategory.DATA, policy, 0, error=cast).kind is RemedyKind.ADD_CAST
    assert decide(ErrorCategory.DATA, policy, 0).kind is RemedyKind.QUARANTINE_BAD_ROWS


def test_backoff_is_capped_and_attempts_are_bounded() -> None:
    policy = HealingPolicy(max_attempts=10, backoff_initial_s=1, backoff_max_s=5)
    assert decide(ErrorCategory.TRANSIENT, policy, 9).delay_s == 5
    given_up = decide(ErrorCategory.TRANSIENT, policy, 10)
    assert given_up.kind is RemedyKind.FAIL and "gave up after 10" in given_up.reason


@pytest.mark.parametrize("category", list(ErrorCategory))
@pytest.mark.parametrize("attempts", [0, 1, 2])
def test_a_disallowed_remedy_is_never_returned(category: ErrorCategory, attempts: int) -> None:
    for allowed in (
        frozenset(),
        frozenset({RemedyKind.RETRY_WITH_BACKOFF}),
        frozenset({RemedyKind.ADD_CAST}),
    ):
        policy = HealingPolicy(allowed=allowed)
        for error in (
            None,
            ErrorInfo(error_class="CastError", message="m"),
            ErrorInfo(error_class="QualityRuleFailed", message="m"),
        ):
            remedy = decide(category, policy, attempts, error=error)
            assert remedy.kind is RemedyKind.FAIL or remedy.kind in allowed


def test_default_policy_refuses_to_rewrite_tables() -> None:
    remedy = decide(ErrorCategory.SCHEMA, HealingPolicy(), 0)
    assert remedy.kind is RemedyKind.FAIL and "evolve_destination not allowed" in remedy.reason


def test_apply_remedy_enforces_the_policy() -> None:
    error = ErrorInfo.from_exception(IncompatibleSchemaError("t", "a", "bigint", "string"))
    evolve = Remedy(kind=RemedyKind.EVOLVE_DESTINATION, reason="forced")
    with pytest.raises(RemedyNotAllowedError):
        apply_remedy(spec(), evolve, error, policy=HealingPolicy())
    evolved = apply_remedy(spec(), evolve, error, policy=HealingPolicy(allowed=ALL))
    assert evolved.destination.mode is WriteMode.REPLACE  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------- apply_remedy
def heal(s: PipelineSpec, error: ErrorInfo, policy: HealingPolicy | None = None) -> PipelineSpec:
    policy = policy or HealingPolicy()
    remedy = decide(classify(error), policy, 0, error=error)
    assert remedy.changes_spec, remedy
    return apply_remedy(s, remedy, error, policy=policy)


def test_add_cast_parses_a_second_date_format() -> None:
    s = spec()
    table = rows(day=["2024-01-05", "06/01/2024", "2024-01-07"])
    healed = heal(s, cast_failure(table, s))
    cast, derive = healed.transforms[0], healed.transforms[1]
    assert isinstance(cast, CastStep) and "day" not in cast.columns
    assert isinstance(derive, DeriveStep) and derive.column == "day" and "%d/%m/%Y" in derive.expr
    with TransformEngine(healed.transforms) as engine:
        out = engine.apply(table)
    assert [d.isoformat() for d in out.column("day").to_pylist()] == [
        "2024-01-05",
        "2024-01-06",
        "2024-01-07",
    ]


def test_add_cast_reads_na_markers_as_null() -> None:
    s = spec()
    table = rows(qty=["1", "N/A", "-"])
    healed = heal(s, cast_failure(table, s))
    assert isinstance(healed.source, CsvSource) and {"N/A", "-"} <= set(healed.source.null_values)
    assert dry_run(healed, table).rows_out == 3


def test_add_cast_widens_int_to_float_for_decimals() -> None:
    s = spec()
    table = rows(qty=["1", "2.5", "3"])
    healed = heal(s, cast_failure(table, s))
    assert healed.transforms[0].columns["qty"] == "float64"  # type: ignore[union-attr]
    assert dry_run(healed, table).rows_out == 3


def test_add_cast_does_not_guess_at_garbage() -> None:
    s = spec()
    error = cast_failure(rows(qty=["1", "lots", "3"]), s)
    with pytest.raises(RemedyNotApplicableError, match="<4 characters: letters>") as info:
        heal(s, error)
    assert "lots" not in str(info.value) and "lots" not in error.message  # described, never echoed


def test_add_cast_picks_the_one_format_every_bad_value_parses_with() -> None:
    s = spec()
    # 05/01/2024 alone fits both %d/%m/%Y and %m/%d/%Y; 31/01/2024 only the first: both must agree.
    table = rows(day=["05/01/2024", "31/01/2024", "2024-01-07"])
    healed = heal(s, cast_failure(table, s))
    derive = healed.transforms[1]
    assert isinstance(derive, DeriveStep) and "%d/%m/%Y" in derive.expr and "%m/%d/%Y" not in derive.expr


def test_quarantine_turns_a_failing_rule_into_a_quarantine() -> None:
    s = spec()
    table = rows(status=["ok", "bad", "ok"])
    violation = QualityChecker(s.quality).check(table).violations[0]
    error = ErrorInfo(
        error_class="QualityRuleFailed", message=f"{violation.rule}: {violation.reason}", path=violation.rule
    )
    healed = heal(s, error)
    assert healed.quality[0].on_fail is OnFail.QUARANTINE
    outcome = QualityChecker(healed.quality).check(table)
    assert not outcome.fail and outcome.kept.num_rows == 2


def test_quarantine_is_not_applicable_to_run_level_rules_or_other_errors() -> None:
    quarantine = Remedy(kind=RemedyKind.QUARANTINE_BAD_ROWS, reason="r")
    row_count = ErrorInfo(error_class="QualityRuleFailed", message="row_count: run produced 0 rows")
    with pytest.raises(RemedyNotApplicableError, match="whole run"):
        apply_remedy(spec(), quarantine, row_count)
    with pytest.raises(RemedyNotApplicableError):
        apply_remedy(spec(), quarantine, ErrorInfo(error_class="ExpressionError", message="x"))


def test_non_spec_remedies_leave_the_spec_alone() -> None:
    s = spec()
    retry = Remedy(kind=RemedyKind.RETRY_WITH_BACKOFF, reason="r", delay_s=1)
    assert apply_remedy(s, retry, ErrorInfo(error_class="SourceUnavailableError", message="x")) is s
