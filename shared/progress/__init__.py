"""The one fold of run events into a run's progress, for every reader of run events (orchestrator,
monitor, gateway, CLI). ``folding`` is the fold (``RunProgress``, ``fold``) and says what it guarantees;
``ledgers`` holds what it counts into (a stage's figures, a rule's failures). Everything is importable
from here, as it was when this was one module."""

from shared.progress.folding import (
    FIGURE_STAGES,
    MAX_TRACKED_BATCHES,
    ORPHAN_FACTOR,
    RunProgress,
    fold,
)
from shared.progress.ledgers import Figures, RuleLedger, RuleQuality, RuleTotals, StageLedger

__all__ = [
    "FIGURE_STAGES",
    "MAX_TRACKED_BATCHES",
    "ORPHAN_FACTOR",
    "Figures",
    "RuleLedger",
    "RuleQuality",
    "RuleTotals",
    "RunProgress",
    "StageLedger",
    "fold",
]
