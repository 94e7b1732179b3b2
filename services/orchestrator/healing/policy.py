"""Self-healing decisions as pure functions: what went wrong (``classify``) and what to do (``decide``).

The orchestrator calls ``classify(error)`` on a failed run's ``ErrorInfo`` and ``decide(category, policy,
attempts, error=error)`` to get a ``Remedy`` from a fixed list, always within the ``HealingPolicy`` (a
remedy the policy does not allow is never returned: the answer is then ``FAIL`` with the reason). Spec
changes are made by ``remedies.apply_remedy``.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import ErrorInfo


class ErrorCategory(StrEnum):
    TRANSIENT = "transient"  # retrying the same work may succeed
    DATA = "data"  # rows do not fit the spec (a cast, a quality rule)
    SCHEMA = "schema"  # the batch's schema does not fit the destination's
    CONFIG = "config"  # the spec or settings are wrong: a human must change them


class RemedyKind(StrEnum):
    RETRY_WITH_BACKOFF = "retry_with_backoff"
    QUARANTINE_BAD_ROWS = "quarantine_bad_rows"
    ADD_CAST = "add_cast"
    EVOLVE_DESTINATION = "evolve_destination"
    FAIL = "fail"


SPEC_CHANGING = frozenset(
    {RemedyKind.QUARANTINE_BAD_ROWS, RemedyKind.ADD_CAST, RemedyKind.EVOLVE_DESTINATION}
)


class HealingPolicy(BaseModel):
    """What the agent may do on its own. ``EVOLVE_DESTINATION`` rewrites a table (mode ``replace``), so it
    is opt-in; ``FAIL`` is always allowed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed: frozenset[RemedyKind] = frozenset(
        {RemedyKind.RETRY_WITH_BACKOFF, RemedyKind.QUARANTINE_BAD_ROWS, RemedyKind.ADD_CAST}
    )
    max_attempts: int = Field(3, ge=0, le=50, description="healing attempts per run before giving up")
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    backoff_multiplier: float = Field(2.0, ge=1.0)

    def allows(self, kind: RemedyKind) -> bool:
        return kind is RemedyKind.FAIL or kind in self.allowed


class Remedy(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: RemedyKind
    reason: str
    delay_s: float | None = Field(None, description="for RETRY_WITH_BACKOFF: wait this long first")

    @property
    def changes_spec(self) -> bool:
        return self.kind in SPEC_CHANGING


# ------------------------------------------------------------------------------------------ classify
_BY_CLASS: dict[str, ErrorCategory] = {
    # transient: connections, brokers, timeouts
    "SourceUnavailableError": ErrorCategory.TRANSIENT,
    "DestinationUnavailableError": ErrorCategory.TRANSIENT,
    "KafkaDeliveryError": ErrorCategory.TRANSIENT,
    "KafkaCommitError": ErrorCategory.TRANSIENT,
    "TopicAdminError": ErrorCategory.TRANSIENT,
    "SchemaSourceUnavailableError": ErrorCategory.TRANSIENT,
    "ConnectionError": ErrorCategory.TRANSIENT,
    "TimeoutError": ErrorCategory.TRANSIENT,
    "OperationalError": ErrorCategory.TRANSIENT,
    # schema: the destination (or a reader schema) does not accept the batch's shape
    "IncompatibleSchemaError": ErrorCategory.SCHEMA,
    "SchemaResolutionError": ErrorCategory.SCHEMA,
    "UnmappedTypeError": ErrorCategory.SCHEMA,
    # data: values do not fit
    "CastError": ErrorCategory.DATA,
    "ExpressionError": ErrorCategory.DATA,
    "DataError": ErrorCategory.DATA,
    "QualityRuleFailed": ErrorCategory.DATA,
    "SourceReadError": ErrorCategory.DATA,
    "InvalidRecordError": ErrorCategory.DATA,
    # config: the spec or the settings must change
    "UnknownColumnError": ErrorCategory.CONFIG,
    "ConfigurationError": ErrorCategory.CONFIG,
    "InvalidExpressionError": ErrorCategory.CONFIG,
    "ForbiddenSqlError": ErrorCategory.CONFIG,
    "InvalidStepError": ErrorCategory.CONFIG,
    "InvalidRuleError": ErrorCategory.CONFIG,
    "UnsupportedSourceError": ErrorCategory.CONFIG,
    "SourceNotFoundError": ErrorCategory.CONFIG,
    "SpecError": ErrorCategory.CONFIG,
    "ModelConfigurationError": ErrorCategory.CONFIG,
}
# For errors of classes we do not know (another library's, a renamed one), the message decides.
_BY_MESSAGE: tuple[tuple[re.Pattern[str], ErrorCategory], ...] = (
    (re.compile(r"(?i)cannot cast|bad value|invalid input syntax|conversion"), ErrorCategory.DATA),
    (
        re.compile(r"(?i)incompatible schema|has type .* but the batch has|schema mismatch"),
        ErrorCategory.SCHEMA,
    ),
    (re.compile(r"(?i)unknown column|not found|no such|permission|invalid .*setting"), ErrorCategory.CONFIG),
    (
        re.compile(r"(?i)timed? ?out|connection (refused|reset|lost)|unavailable|temporarily"),
        ErrorCategory.TRANSIENT,
    ),
)


def classify(error: ErrorInfo) -> ErrorCategory:
    category = _BY_CLASS.get(error.error_class)
    if category is not None:
        return category
    if error.transient:  # the raising side's own classification (``AoetlError.transient``)
        return ErrorCategory.TRANSIENT
    for pattern, by_message in _BY_MESSAGE:
        if pattern.search(error.message):
            return by_message
    # Unknown and terminal: a human must look (retrying an unknown bug forever would hide it).
    return ErrorCategory.CONFIG


# -------------------------------------------------------------------------------------------- decide
def _preferences(category: ErrorCategory, error: ErrorInfo | None) -> list[RemedyKind]:
    if category is ErrorCategory.TRANSIENT:
        return [RemedyKind.RETRY_WITH_BACKOFF]
    if category is ErrorCategory.SCHEMA:
        return [RemedyKind.EVOLVE_DESTINATION]
    if category is ErrorCategory.DATA:
        error_class = error.error_class if error is not None else None
        if error_class == "CastError":
            return [RemedyKind.ADD_CAST]  # rows that fail a cast never reach the quality rules
        if error_class == "QualityRuleFailed":
            return [RemedyKind.QUARANTINE_BAD_ROWS]
        return [RemedyKind.QUARANTINE_BAD_ROWS, RemedyKind.ADD_CAST]
    return []


def backoff_delay(policy: HealingPolicy, attempts: int) -> float:
    return min(policy.backoff_max_s, policy.backoff_initial_s * policy.backoff_multiplier ** max(attempts, 0))


def decide(
    category: ErrorCategory, policy: HealingPolicy, attempts: int, *, error: ErrorInfo | None = None
) -> Remedy:
    """The remedy for the ``attempts``-th healing of a run (0 = first); ``error`` refines the choice."""
    if attempts >= policy.max_attempts:
        return Remedy(
            kind=RemedyKind.FAIL,
            reason=f"gave up after {attempts} healing attempt(s) (max {policy.max_attempts})",
        )
    wanted = _preferences(category, error)
    if not wanted:
        return Remedy(kind=RemedyKind.FAIL, reason=f"{category.value} errors need a change by a human")
    for kind in wanted:
        if policy.allows(kind):
            delay = backoff_delay(policy, attempts) if kind is RemedyKind.RETRY_WITH_BACKOFF else None
            return Remedy(kind=kind, reason=f"{category.value} error: {kind.value}", delay_s=delay)
    refused = ", ".join(k.value for k in wanted)
    return Remedy(
        kind=RemedyKind.FAIL, reason=f"{category.value} error: {refused} not allowed by the healing policy"
    )
