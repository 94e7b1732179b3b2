"""Pipeline commands: validate, submit, run --wait, status, results --follow, alerts --follow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from aoetl.client import AoetlClient
from aoetl.commands.door import stop_audited, submit_audited
from shared.contracts import Alert, PipelineResult, RunEvent, RunStatus, Stage, StageStats
from shared.errors import ConfigurationError
from shared.kafka.topics import Topics
from shared.policy import DEFAULT_TENANT, check_spec, load_policy
from shared.progress import FIGURE_STAGES, RunProgress, fold
from shared.spec import SpecError, SpecIssue, load_spec
from shared.spec.models import PipelineSpec

console = Console()
err_console = Console(stderr=True)

EXIT_CODES = {
    RunStatus.COMPLETED: 0,
    RunStatus.FAILED: 1,
    RunStatus.REJECTED: 2,
    RunStatus.TIMED_OUT: 3,
    RunStatus.CANCELLED: 4,
}
EXIT_INVALID_SPEC = 2

FileArg = Annotated[Path, typer.Argument(help="pipeline spec, YAML or JSON")]


def _exit_invalid(path: Path, issues: list[SpecIssue], what: str = "invalid pipeline spec") -> typer.Exit:
    err_console.print(f"[bold red]{path}: {what}[/]")
    for issue in issues:
        err_console.print(f"  [red]✗[/] [bold]{escape(issue.path or '(spec)')}[/]: {escape(issue.reason)}")
    return typer.Exit(EXIT_INVALID_SPEC)


def _load_or_exit(path: Path) -> PipelineSpec:
    try:
        return load_spec(path)
    except SpecError as exc:
        raise _exit_invalid(path, exc.issues) from exc


def validate(
    file: FileArg,
    tenant: Annotated[str, typer.Option(help="the tenant the spec would run as")] = DEFAULT_TENANT,
) -> None:
    """Check a spec and the spec policy of this environment (the AOETL_POLICY_* variables the services
    read: data roots, declared connections, egress allow list...); print every problem as field path +
    reason; exit non-zero when invalid. The orchestrator checks again with its own settings when the spec
    is submitted."""
    spec = _load_or_exit(file)
    try:
        refused = check_spec(spec, load_policy(), tenant=tenant)
    except ConfigurationError as exc:
        err_console.print(f"[bold red]invalid spec policy settings:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_INVALID_SPEC) from exc
    if refused:
        raise _exit_invalid(file, refused, "refused by the spec policy")
    console.print(
        f"[green]✓[/] {file}: pipeline [bold]{spec.name}[/] ({spec.source.type} → "
        f"{len(spec.transforms)} steps, {len(spec.quality)} rules → {spec.destination.type})"
    )


def submit(file: FileArg) -> None:
    """Publish a pipeline request; print the run id."""
    spec = _load_or_exit(file)
    client = AoetlClient()
    try:
        request = submit_audited(client, spec)
    finally:
        client.close()
    console.print(request.run_id)


def print_result(result: PipelineResult) -> None:
    colour = "green" if result.status is RunStatus.COMPLETED else "red"
    took = (result.finished_at - result.started_at).total_seconds()
    console.print(
        f"run [bold]{result.run_id}[/] ({result.pipeline}): "
        f"[bold {colour}]{result.status.value}[/] in {took:.1f}s"
    )
    if result.stages:
        console.print(_stage_table(result.stages, busy=True))
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
    console.print(
        f"run [bold]{progress.run_id}[/]: {state}{took}, {splits}{load.batches} batches "
        f"({load.rows_out:,} rows) loaded; last event {last.kind.value} at {last.at:%H:%M:%S}"
    )
    console.print(_stage_table(progress.stage_stats(), busy=False))
    for rule in progress.quality():
        level = "red" if rule.failed else "yellow"
        console.print(
            f"  [{level}]![/] rule {escape(rule.rule)} ({rule.on_fail.value}): {rule.failed_rows:,} of "
            f"{rule.checked_rows:,} checked rows failed ({rule.fraction:.1%})"
        )


def run(
    file: FileArg,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run to its result")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 3600.0,
) -> None:
    """Submit a pipeline and follow it: a progress bar per stage, a summary table, exit code by status."""
    spec = _load_or_exit(file)
    client = AoetlClient()
    if not wait:
        console.print(submit_audited(client, spec).run_id)
        client.close()
        return
    with client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False) as reader:
        request = submit_audited(client, spec)
        console.print(f"submitted run [bold]{request.run_id}[/]")
        result = follow_run(client, reader, request.run_id, timeout)
    client.close()
    if result is None:
        err_console.print(f"[red]no result within {timeout:.0f}s[/]; check `aoetl status {request.run_id}`")
        raise typer.Exit(5)
    print_result(result)
    raise typer.Exit(EXIT_CODES[result.status])


def follow_run(client: AoetlClient, reader, run_id: str, timeout: float) -> PipelineResult | None:
    import time

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


def status(run_id: Annotated[str, typer.Argument(help="the run id printed by submit")]) -> None:
    """A run's result, or its progress so far, read from Kafka."""
    client = AoetlClient()
    result = client.find_result(run_id)
    if result is not None:
        print_result(result)
        raise typer.Exit(EXIT_CODES[result.status])
    events = client.run_events(run_id)
    if not events:
        err_console.print(f"[red]unknown run {run_id}[/]")
        raise typer.Exit(6)
    print_progress(fold(run_id, events), events[-1], datetime.now(UTC))


def stop(
    run_id: Annotated[str, typer.Argument(help="the run to stop")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the run's result")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 60.0,
) -> None:
    """Stop a run. A continuous run's readers commit what they read and leave its topic (submit the
    pipeline again to resume exactly there); a one-shot run still in progress is aborted. Ends CANCELLED."""
    import time

    client = AoetlClient()
    try:
        finished = client.find_result(run_id)
        if finished is not None:
            console.print(f"run {run_id} already finished")
            print_result(finished)
            return
        with client.reader(Topics.RESULTS, from_beginning=False) as reader:
            stop_audited(client, run_id)
            if not wait:
                console.print(f"stop of run [bold]{run_id}[/] requested")
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for _, value in reader.poll({Topics.RESULTS: PipelineResult}):
                    if isinstance(value, PipelineResult) and value.run_id == run_id:
                        print_result(value)
                        return
    finally:
        client.close()
    err_console.print(f"[red]no result for run {run_id} within {timeout:.0f}s[/] (unknown run id?)")
    raise typer.Exit(5)


def results(
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print pipeline results (JSON lines with --json)."""
    _stream(Topics.RESULTS, PipelineResult, follow, from_beginning or not follow, as_json)


def alerts(
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print alerts (JSON lines with --json)."""
    _stream(Topics.ALERTS, Alert, follow, from_beginning or not follow, as_json)


def _stream(topic: str, model: type, follow: bool, from_beginning: bool, as_json: bool) -> None:
    client = AoetlClient()
    with client.reader(topic, from_beginning=from_beginning) as reader:
        source = reader.follow({topic: model}) if follow else reader.drain({topic: model})
        try:
            for _, value in source:
                if as_json:
                    print(json.dumps(value.model_dump(mode="json"), default=str), flush=True)
                elif isinstance(value, PipelineResult):
                    print_result(value)
                elif isinstance(value, Alert):
                    console.print(
                        f"{value.at:%Y-%m-%d %H:%M:%S} [bold]{value.severity.value}[/] {value.kind.value} "
                        f"run={value.run_id or '-'}: {escape(value.message)}"
                    )
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    for command in (validate, submit, run, status, stop, results, alerts):
        app.command()(command)
