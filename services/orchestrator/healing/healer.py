"""The orchestrator's self-healing: turn a failed batch or task into a decision from a fixed list.

The healing policy (``healing.policy``) classifies the error and picks a remedy it allows; spec-changing
remedies (quarantine the bad rows, add a cast) produce a new spec through ``healing.remedies``, validated
by ``parse_spec`` before use. Nothing here executes generated code: the only outputs are a spec and a retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.orchestrator.exceptions import RemedyError
from services.orchestrator.healing.policy import HealingPolicy, RemedyKind, classify, decide
from services.orchestrator.healing.remedies import apply_remedy
from shared.contracts import ErrorInfo
from shared.spec.models import PipelineSpec


@dataclass(frozen=True)
class Decision:
    action: str  # a RemedyKind value
    reason: str
    category: str
    spec: PipelineSpec | None = None  # the healed spec, for spec-changing remedies
    delay_s: float = 0.0

    @property
    def heals(self) -> bool:
        return self.action != RemedyKind.FAIL.value


class Healer:
    def __init__(self, policy: HealingPolicy | None = None):
        self.policy = policy or HealingPolicy()

    def __call__(self, spec: PipelineSpec, error: ErrorInfo, attempts: int) -> Decision:
        category = classify(error)
        remedy = decide(category, self.policy, attempts, error=error)
        if remedy.kind is RemedyKind.FAIL:
            return Decision(remedy.kind.value, remedy.reason, category.value)
        new_spec = None
        if remedy.changes_spec:
            try:
                new_spec = apply_remedy(spec, remedy, error, policy=self.policy)
            except RemedyError as exc:  # not applicable to this error or spec: fail, and say why
                return Decision(
                    RemedyKind.FAIL.value, f"{remedy.kind.value} not applicable: {exc}", category.value
                )
        return Decision(remedy.kind.value, remedy.reason, category.value, new_spec, remedy.delay_s or 0.0)
