"""What the run book (``services.orchestrator.runs.RunBook``) is given rather than doing itself: planning a
run's splits, checking its row counts, and advice on healing a failed task. Injected as plain callables,
so the fold stays pure (no I/O, the clock passed in) and its tests hand it fakes; the service wires the
real ones (``shared.connectors`` planners, ``shared.spec.quality``, ``services.orchestrator.healing``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from shared.contracts import ErrorInfo, Split
from shared.spec.models import PipelineSpec

SplitPlanner = Callable[[PipelineSpec, bytes | None], Sequence[Split]]
RowCountCheck = Callable[[PipelineSpec, int], list[str]]


class HealDecision(Protocol):
    """A healer's answer for one failed task (``services.orchestrator.healing.healer.Decision`` is one):
    the run book publishes it as an AGENT_DECISION event and acts on ``heals`` / ``spec`` / ``delay_s``."""

    @property
    def action(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def spec(self) -> PipelineSpec | None: ...
    @property
    def delay_s(self) -> float: ...
    @property
    def heals(self) -> bool: ...


# (current spec, error, healing attempts so far) -> decision; see services.orchestrator.healing.healer
HealingAdvisor = Callable[[PipelineSpec, ErrorInfo, int], HealDecision]
