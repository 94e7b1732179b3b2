"""What a run's result says about its data (PipelineResult v3): the quality outcome of each row-level rule
of its spec, and what was written where. Both read the run's progress fold (``shared.progress``), so a
result says what the monitor, the gateway and the CLI counted, each batch once however often its events
were delivered.

Every row-level rule of the spec is listed, in spec order, a rule no row failed as PASSED (its checked
rows are still the rows it was evaluated on); a rule the fold saw that the spec no longer has (healing
replaced the spec) follows. Run-level ``row_count`` rules have no rows of their own to report: their
failure is one of the result's errors.

What was written: the destination's table, path or topic (never its connection: the DSN is a secret) and
the rows and bytes loaded. A run that did not complete was aborted, and abort drops what it staged: a
replace-mode table, a file destination's run directory (0 rows, 0 bytes). Appended or merged database
rows and produced Kafka records stay, so those count. ``bytes`` is the sum of the loaded batches' bytes
(file parts' sizes, produced record values), null (unknown) when a batch's sink did not know them: the
SQL sinks never do (``services.load.sinks.ledger`` says why), and events before RunEvent v11 did not say.
"""

from __future__ import annotations

from shared.contracts import RuleAction, RuleOutcome, RunStatus, Stage, WriteOutcome
from shared.policy.plugins import plugin_target
from shared.progress import RuleTotals, RunProgress
from shared.spec.models import (
    Destination,
    DuckDBDestination,
    JsonlDestination,
    KafkaDestination,
    OnFail,
    ParquetDestination,
    PipelineSpec,
    PostgresDestination,
    WriteMode,
)
from shared.spec.plugins import PluginDestination
from shared.spec.quality import RowCountRule, rule_name
from shared.transform.quality import rule_columns

_ACTIONS = {
    OnFail.FAIL: RuleAction.FAILED,
    OnFail.QUARANTINE: RuleAction.QUARANTINED,
    OnFail.WARN: RuleAction.WARNED,
}


def quality_outcomes(spec: PipelineSpec, progress: RunProgress) -> list[RuleOutcome]:
    totals = {t.rule: t for t in progress.rule_totals()}
    outcomes: list[RuleOutcome] = []
    for rule in spec.quality:
        if isinstance(rule, RowCountRule):
            continue
        name = rule_name(rule)
        found = totals.pop(name, None)
        if found is None:
            checked = progress.rows_checked_by(rule.on_fail)
            outcomes.append(
                RuleOutcome(
                    rule=name, columns=rule_columns(rule), rows_checked=checked, action=RuleAction.PASSED
                )
            )
        else:
            outcomes.append(_outcome(found, rule_columns(rule)))
    return outcomes + [_outcome(found, []) for found in totals.values()]


def _outcome(totals: RuleTotals, columns: list[str]) -> RuleOutcome:
    action = _ACTIONS[totals.on_fail] if totals.rows_failed or totals.failed else RuleAction.PASSED
    return RuleOutcome(
        rule=totals.rule,
        columns=columns,
        rows_checked=totals.rows_checked,
        rows_failed=totals.rows_failed,
        action=action,
        samples=list(totals.samples),
    )


def write_outcomes(spec: PipelineSpec, progress: RunProgress, status: RunStatus) -> list[WriteOutcome]:
    destination = spec.destination
    loaded = progress.stage(Stage.LOAD).total
    rows, size = loaded.rows_out, loaded.bytes
    if status is not RunStatus.COMPLETED and not spec.continuous and not _kept_after_abort(destination):
        rows, size = 0, 0
    return [WriteOutcome(destination=destination.type, target=_target(destination), rows=rows, bytes=size)]


def _target(destination: Destination) -> str:
    if isinstance(destination, PostgresDestination):
        return destination.table  # the connection names the DSN, a secret: never reported
    if isinstance(destination, DuckDBDestination):
        return f"{destination.path}:{destination.table}"
    if isinstance(destination, ParquetDestination | JsonlDestination):
        return destination.path
    if isinstance(destination, PluginDestination):
        return plugin_target(destination)
    assert isinstance(destination, KafkaDestination)
    return destination.topic


def _kept_after_abort(destination: Destination) -> bool:
    if isinstance(destination, PostgresDestination | DuckDBDestination):
        return destination.mode is not WriteMode.REPLACE
    return isinstance(destination, KafkaDestination)  # produced records cannot be taken back
