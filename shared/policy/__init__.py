"""The spec policy: what the operator allows a pipeline spec to touch, checked at validation and again
where a connector or sink acts.

``check_spec(spec, policy, tenant=...)`` runs every rule of ``RULES`` and returns the problems as
``SpecIssue`` (field path + reason, what the spec loader reports), so a violation is answered exactly like
an invalid spec: REJECTED by the orchestrator, 422 by the gateway's ``PUT /definitions``, exit code 2 from
``aoetl validate``. It is the one way those three doors call the policy. A rule is a function
``(spec, policy, tenant) -> list[SpecIssue]``, one module per concern:

* ``files``: file sources and destinations only under the data roots;
* ``sql``: a postgres source query is exactly one read-only SELECT (sqlglot);
* ``names``: no destination in the system's schema or tables, no internal topic read or written;
* ``connections``: secrets only through named connections declared by the operator, per tenant;
* ``object_store``: ``s3://`` sources and destinations through a declared s3 connection, inside its roots;
* ``egress``: ``http`` sources reach public addresses only (plus an allow list), on every redirect too;
* ``plugins``: the fields a plugin section declares (paths, URLs, SQL, topics, connections) get the rule
  of their kind above.

Run ids are not part of a spec: ``check_run_id`` checks the one a request brings, and ``check_triggers``
the topic triggers stored beside a definition. The same functions back the checks where connectors and
sinks act (``files.confine``, ``names.require_*``, ``connections.connection_for``,
``egress.EgressTransport``), which raise ``PolicyViolation`` (or a subclass). Secrets and error texts:
``shared.redaction``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shared.policy.connections import connection_issues
from shared.policy.egress import egress_issues
from shared.policy.errors import PolicyViolation
from shared.policy.files import check_files
from shared.policy.names import check_names, run_id_problem, topic_problem
from shared.policy.object_store import check_object_store
from shared.policy.plugins import check_plugins
from shared.policy.settings import PolicySettings, load_policy
from shared.policy.sql import check_postgres_source
from shared.policy.tenancy import DEFAULT_TENANT, tenant_of
from shared.spec.loader import SpecError, SpecIssue
from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger, TopicTrigger

# (spec, policy, tenant) -> the issues it finds; every rule sees the whole spec. Rules that are the same
# for every tenant take the tenant with a default and ignore it.
Rule = Callable[[PipelineSpec, PolicySettings, str], list[SpecIssue]]

RULES: tuple[Rule, ...] = (
    check_files,
    check_postgres_source,
    check_names,
    connection_issues,
    egress_issues,
    check_plugins,
    check_object_store,
)

__all__ = [
    "DEFAULT_TENANT",
    "RULES",
    "PolicySettings",
    "PolicyViolation",
    "Rule",
    "SpecIssue",
    "check_run_id",
    "check_spec",
    "check_triggers",
    "load_policy",
    "require_allowed",
    "tenant_of",
]


def check_spec(
    spec: PipelineSpec, policy: PolicySettings, *, tenant: str = DEFAULT_TENANT
) -> list[SpecIssue]:
    """Every problem the policy finds in ``spec`` for ``tenant`` (empty: allowed)."""
    return [issue for rule in RULES for issue in rule(spec, policy, tenant)]


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
    spec: PipelineSpec,
    policy: PolicySettings,
    triggers: Sequence[DefinitionTrigger] = (),
    *,
    tenant: str = DEFAULT_TENANT,
) -> None:
    """``SpecError`` listing every policy problem of ``spec`` (and of its ``triggers``), if any."""
    issues = check_spec(spec, policy, tenant=tenant) + check_triggers(triggers, policy)
    if issues:
        raise SpecError(issues)
