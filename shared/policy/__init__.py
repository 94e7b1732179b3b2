"""The spec policy: what the operator allows a pipeline spec to touch, checked at validation and again
where a connector or sink acts.

``check_spec(spec, policy)`` runs every rule of ``RULES`` and returns the problems as ``SpecIssue`` (field
path + reason, what the spec loader reports), so a violation is answered exactly like an invalid spec:
REJECTED by the orchestrator, 422 by the gateway's ``PUT /definitions``, exit code 2 from ``aoetl
validate``. A rule is a function ``(spec, policy) -> list[SpecIssue]``, one module per concern:

* ``files``: file sources and destinations only under the data roots;
* ``sql``: a postgres source query is exactly one read-only SELECT (sqlglot);
* ``names``: no destination in the system's schema or tables, no internal topic read or written.

Run ids are not part of a spec: ``check_run_id`` checks the one a request brings, and ``check_triggers``
the topic triggers stored beside a definition. The same functions back the checks where connectors and
sinks act (``shared.policy.files.confine``, ``names.require_*``), which raise ``PolicyViolation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shared.policy.errors import PolicyViolation
from shared.policy.files import check_files
from shared.policy.names import check_names, run_id_problem, topic_problem
from shared.policy.settings import PolicySettings, load_policy
from shared.policy.sql import check_postgres_source
from shared.spec.loader import SpecError, SpecIssue
from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger, TopicTrigger

Rule = Callable[[PipelineSpec, PolicySettings], list[SpecIssue]]

RULES: tuple[Rule, ...] = (
    check_files,
    check_postgres_source,
    check_names,
)

__all__ = [
    "RULES",
    "PolicySettings",
    "PolicyViolation",
    "Rule",
    "check_run_id",
    "check_spec",
    "check_triggers",
    "load_policy",
    "require_allowed",
]


def check_spec(spec: PipelineSpec, policy: PolicySettings) -> list[SpecIssue]:
    """Every problem the policy finds in ``spec`` (empty: allowed)."""
    return [issue for rule in RULES for issue in rule(spec, policy)]


def check_triggers(triggers: Sequence[DefinitionTrigger], policy: PolicySettings) -> list[SpecIssue]:
    """Topic triggers may not read internal topics."""
    issues: list[SpecIssue] = []
    for index, trigger in enumerate(triggers):
        if isinstance(trigger, TopicTrigger):
            problem = topic_problem(trigger.topic, policy.internal_topic_prefixes)
            if problem:
                issues.append(SpecIssue(f"triggers[{index}].topic", problem))
    return issues


def check_run_id(run_id: str) -> list[SpecIssue]:
    problem = run_id_problem(run_id)
    return [SpecIssue("run_id", problem)] if problem else []


def require_allowed(
    spec: PipelineSpec, policy: PolicySettings, triggers: Sequence[DefinitionTrigger] = ()
) -> None:
    """``SpecError`` listing every policy problem of ``spec`` (and of its ``triggers``), if any."""
    issues = check_spec(spec, policy) + check_triggers(triggers, policy)
    if issues:
        raise SpecError(issues)
