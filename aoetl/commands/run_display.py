"""How the CLI shows a run: its result, its progress so far, live bars per stage while it runs, and the exit
code of each final status. Used by ``aoetl run|status|stop``, the demo and the pipeline benchmark.

A result shows its quality outcomes (PipelineResult v3) right under the status line: a run whose ``warn``
rules failed on most rows still COMPLETES, and must not look like a clean one. One line per rule (failed of
checked rows, the fraction, the action, a few failing values) and one per destination written.

A module of its own, imported by those commands when they run: it needs the contracts, the progress fold
and rich's live display, which ``aoetl.commands.pipelines`` does not import at its top (cold start, see
``aoetl.cli``).
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from aoetl.client import AoetlClient
from aoetl.output import CliConsole
from shared.contracts import (
    PipelineResult,
    RuleAction,
    RuleOutcome,
    RunEvent,
    RunStatus,
    Stage,
    StageStats,
    WriteOutcome,
)
from shared.kafka.topics import Topics
from shared.progress import FIGURE_STAGES, RunProgress

console = CliConsole()

EXIT_CODES = {
    RunStatus.COMPLETED: 0,
    RunStatus.FAILED: 1,
    RunStatus.REJECTED: 2,
    RunStatus.TIMED_OUT: 3,
    RunStatus.CANCELLED: 4,
}


def print_result(result: PipelineResult) -> None:
    colour = "green" if result.status is RunStatus.COMPLETED else "red"
    took = (result.finished_at - result.started_at).total_seconds()
    console.print(
        f"run [bold]{result.run_id}[/] ({result.pipeline}): "
        f"[bold {colour}]{result.status.value}[/] in {took:.1f}s"
    )
    if result.stages:
        console.print(_stage_table(result.stages, busy=True))
    if result.quality:
        console.print(quality_table(result.quality))
    for written in result.written:
        console.print(f"  [cyan]→[/] {escape(written_line(written))}")
    for e in result.errors:
        where = f"{e.path}: " if e.path else ""
        console.print(f"  [red]✗[/] {escape(where + e.message)} [dim]({e.error_class})[/]")
    for d in result.decisions:
        console.print(f"  [cyan]→[/] {d}")


def _stage_table(stages: list[StageStats], *, busy: bool) -> Table:
    table = Table("stage", "rows in", "rows out", "rejected", "batches", *(["busy ms"] if busy else []))
    for s in stages:
        figures = [f"{s.rows_in:,}", f"{s.rows_out:,}", f"{s.rows_rejected:,}", str(s.batches)]
        table.add_row(s.stage.value, *figures, *([str(s.duration_ms)] if busy else []))
    return table


_ACTION_STYLES = {
    RuleAction.PASSED: "green",
    RuleAction.WARNED: "yellow",
    RuleAction.QUARANTINED: "yellow",
    RuleAction.FAILED: "red",
}


def quality_table(outcomes: list[RuleOutcome]) -> Table:
    table = Table("rule", "failed / checked", "%", "action", "failing values", title="quality")
    for o in outcomes:
        fraction = o.rows_failed / o.rows_checked if o.rows_checked else 0.0
        table.add_row(
            escape(o.rule),
            f"{o.rows_failed:,} / {o.rows_checked:,}",
            f"{fraction:.1%}",
            f"[{_ACTION_STYLES[o.action]}]{o.action.value}[/]",
            escape(", ".join(o.samples)),  # user data: shown as text, never as markup
        )
    return table


def written_line(written: WriteOutcome) -> str:
    size = f", {written.bytes:,} bytes" if written.bytes is not None else ""
    return f"wrote {written.rows:,} rows to {written.destination} {written.target}{size}"


def print_progress(progress: RunProgress, last: RunEvent, now: datetime) -> None:
    """A run in progress (or finished, its result not found): the common fold of its events."""
    state = progress.status.value if progress.status is not None else "RUNNING"
    elapsed = progress.elapsed(now)
    took = f" for {elapsed.total_seconds():.0f}s" if elapsed is not None else ""
    splits = (
        f"{progress.splits_extracted} of {progress.splits_planned} splits extracted, "
        if progress.splits_planned is not None
        else ""
    )
    load = progress.stage(Stage.LOAD).total
    size = f", {load.bytes:,} bytes" if load.bytes is not None and load.batches else ""
    console.print(
        f"run [bold]{progress.run_id}[/]: {state}{took}, {splits}{load.batches} batches "
        f"({load.rows_out:,} rows{size}) loaded; last event {last.kind.value} at {last.at:%H:%M:%S}"
    )
    console.print(_stage_table(progress.stage_stats(), busy=False))
    for rule in progress.rule_totals():
        level = "red" if rule.failed else "yellow"
        console.print(
            f"  [{level}]![/] rule {escape(rule.rule)} ({rule.on_fail.value}): {rule.rows_failed:,} of "
            f"{rule.rows_checked:,} checked rows failed ({rule.fraction:.1%})"
        )


def follow_run(client: AoetlClient, reader, run_id: str, timeout: float) -> PipelineResult | None:
    types = {Topics.EVENTS: RunEvent, Topics.RESULTS: PipelineResult}
    deadline = time.monotonic() + timeout
    progress = RunProgress(run_id=run_id)
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:>12} rows"),
        TimeElapsedColumn(),
        console=console,
        # Piped or redirected, rich shows the bars once, when they stop; refreshing them 10 times a second
        # would still build the whole table each time for nobody (~0.1 CPU-s of a 1M-row run)
        auto_refresh=console.is_terminal,
    ) as bars:
        tasks = {stage: bars.add_task(stage.value, total=None, rows="0") for stage in FIGURE_STAGES}
        while time.monotonic() < deadline:
            for _, value in reader.poll(types):
                if value.run_id != run_id:
                    continue
                if isinstance(value, PipelineResult):
                    return value
                assert isinstance(value, RunEvent)
                progress.apply(value)
                _update_bars(bars, tasks, progress)
    return None


def _update_bars(bars: Progress, tasks: dict[Stage, TaskID], progress: RunProgress) -> None:
    """Extract counts splits (a continuous run: batches read, no end), transform and load count batches
    of the batches the extracted splits produced; every batch counted once, as in the result."""
    for stage in FIGURE_STAGES:
        figures = progress.stage(stage).total
        if stage is Stage.EXTRACT and not progress.continuous:
            total, done = progress.splits_planned, progress.splits_extracted
        else:
            total = None if progress.continuous else (progress.batches_expected or None)
            done = figures.batches
        bars.update(tasks[stage], total=total, completed=done, rows=f"{figures.rows_out:,}")
