"""Pipeline commands: validate, submit, run --wait, status, results --follow, alerts --follow.

Cold start (see ``aoetl.cli``): this module is imported to show any of these commands' help, so at its top
it imports only the standard library, typer and rich; each command imports what it uses (the spec loader,
the policy, the Kafka client, the contracts, ``run_display``) in its body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape

from aoetl.commands.data_roots import default_to_dev_data_roots
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit

if TYPE_CHECKING:
    from aoetl.client import AoetlClient
    from shared.contracts import Contract, PipelineResult, RunEvent
    from shared.progress import RunProgress
    from shared.spec import SpecIssue
    from shared.spec.models import PipelineSpec

# shared.contracts.DEFAULT_TENANT, written out here because this default is part of validate's signature,
# which typer reads to build the command (tests/unit/test_cli_startup.py checks that the two agree)
DEFAULT_TENANT = "default"

console = CliConsole()
err_console = CliConsole(stderr=True)

EXIT_INVALID_SPEC = 2

FileArg = Annotated[Path, typer.Argument(help="pipeline spec, YAML or JSON")]


def _exit_invalid(path: Path, issues: list[SpecIssue], what: str = "invalid pipeline spec") -> typer.Exit:
    err_console.print(f"[bold red]{path}: {what}[/]")
    for issue in issues:
        err_console.print(f"  [red]✗[/] [bold]{escape(issue.path or '(spec)')}[/]: {escape(issue.reason)}")
    return typer.Exit(EXIT_INVALID_SPEC)


def _load_or_exit(path: Path) -> PipelineSpec:
    """The spec of ``path``, its relative paths resolved against the file's directory (``aoetl.spec_paths``:
    the services run elsewhere, the spec must name the same files there)."""
    from aoetl.spec_paths import resolve_spec_paths
    from shared.spec import SpecError, load_spec

    try:
        return resolve_spec_paths(load_spec(path), path.parent)
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
    from aoetl.spec_files import load_definition_file, sql_issues
    from shared.errors import ConfigurationError
    from shared.policy import check_spec, check_triggers, load_policy
    from shared.spec import SpecError

    default_to_dev_data_roots()
    # a definition file (a spec with ``triggers:``) is checked whole, as `definitions apply` reads it
    try:
        spec, triggers = load_definition_file(file)
    except SpecError as exc:
        raise _exit_invalid(file, exc.issues) from exc
    invalid_sql = sql_issues(spec)
    if invalid_sql:
        raise _exit_invalid(file, invalid_sql)
    try:
        policy = load_policy()
        refused = check_spec(spec, policy, tenant=tenant) + check_triggers(triggers, policy)
    except ConfigurationError as exc:
        err_console.print(f"[bold red]invalid spec policy settings:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_INVALID_SPEC) from exc
    if refused:
        raise _exit_invalid(file, refused, "refused by the spec policy")
    with_triggers = f", {len(triggers)} trigger(s)" if triggers else ""
    console.print(
        f"[green]✓[/] {file}: pipeline [bold]{spec.name}[/] ({spec.source.type} → "
        f"{len(spec.transforms)} steps, {len(spec.quality)} rules → {spec.destination.type}{with_triggers})"
    )


GatewayOpt = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        envvar="AOETL_GATEWAY_URL",
        help='go through this gateway\'s REST API instead of Kafka (also: a context with via = "gateway")',
    ),
]


def submit(file: FileArg, gateway: GatewayOpt = None) -> None:
    """Publish a pipeline request; print the run id."""
    from aoetl.transport import open_transport

    spec = _load_or_exit(file)
    transport = open_transport(gateway)
    try:
        run_id = transport.submit(spec)
    finally:
        transport.close()
    console.print(run_id)


def run(
    file: FileArg,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run to its result")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 3600.0,
    gateway: GatewayOpt = None,
) -> None:
    """Submit a pipeline and follow it: a progress bar per stage, a summary table, exit code by status.

    Through the gateway (``POST /runs``, then ``GET /runs/{id}`` until the result): its status line
    instead of the bars."""
    from aoetl.client import AoetlClient
    from aoetl.commands.door import submit_audited
    from aoetl.transport import gateway_in_use
    from shared.kafka.topics import Topics

    spec = _load_or_exit(file)
    url = gateway_in_use(gateway)
    if url is not None:
        _run_through(url, spec, wait, timeout)
    client = AoetlClient()
    if not wait:
        console.print(submit_audited(client, spec).run_id)
        client.close()
        return
    with client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False) as reader:
        request = submit_audited(client, spec)
        console.print(f"submitted run [bold]{request.run_id}[/]")
        # imported once the run is under way: its import (rich's progress bars, the events' fold) then
        # overlaps the run instead of delaying its start
        from aoetl.commands.run_display import follow_run

        result = follow_run(client, reader, request.run_id, timeout)
    client.close()
    _ended(result, request.run_id, timeout)


def _run_through(url: str, spec: PipelineSpec, wait: bool, timeout: float) -> NoReturn:
    """``run`` through the gateway: submitted over REST, then its view asked for until the result; each
    change of status printed once."""
    from aoetl.rest_transport import RestTransport
    from aoetl.transport import RunState

    transport = RestTransport(url)
    try:
        run_id = transport.submit(spec)
        if not wait:
            console.print(run_id)
            raise typer.Exit(0)
        console.print(f"submitted run [bold]{run_id}[/] through the gateway")
        shown: list[str] = []

        def seen(state: RunState) -> None:
            if state.status not in shown[-1:]:
                shown.append(state.status)
                console.print(f"  {state.status}")

        result = transport.wait_result(run_id, timeout, seen)
    finally:
        transport.close()
    _ended(result, run_id, timeout)


def _ended(result: PipelineResult | None, run_id: str, timeout: float) -> NoReturn:
    """How ``run`` ends: the result's summary and its status's exit code, or exit 5 when none came."""
    from aoetl.commands.run_display import EXIT_CODES, print_result

    if result is None:
        err_console.print(f"[red]no result within {timeout:.0f}s[/]; check `aoetl status {run_id}`")
        raise typer.Exit(5)
    print_result(result)
    raise typer.Exit(EXIT_CODES[result.status])


def status(
    run_id: Annotated[str, typer.Argument(help="the run id printed by submit")],
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """A run's result, or its progress so far, read from Kafka; a run whose events are past their retention
    from its run history summary."""
    from aoetl.transport import gateway_in_use

    url = gateway_in_use(gateway)
    if url is not None:
        _status_through(url, run_id, output)
    from aoetl.client import AoetlClient
    from aoetl.commands.run_display import EXIT_CODES, print_progress, print_result
    from shared.progress import fold

    client = AoetlClient()
    result = client.find_result(run_id)
    if result is not None:
        if output is OutputFormat.TABLE:
            print_result(result)
        else:
            emit(output, result.model_dump(mode="json"))
        raise typer.Exit(EXIT_CODES[result.status])
    events = client.run_events(run_id)
    if not events:
        _status_from_history(client, run_id, output)
    progress = fold(run_id, events)
    if output is OutputFormat.TABLE:
        print_progress(progress, events[-1], datetime.now(UTC))
    else:
        emit(output, _progress_document(progress, events[-1]))


def _status_through(url: str, run_id: str, output: OutputFormat) -> NoReturn:
    """``status`` through the gateway: its view of the run (``GET /runs/{id}``), exit code by status."""
    from aoetl.commands.run_display import EXIT_CODES
    from aoetl.rest_transport import RestTransport
    from shared.contracts import RunStatus

    transport = RestTransport(url)
    try:
        state = transport.run_state(run_id)
    finally:
        transport.close()
    if state is None:
        err_console.print(f"[red]unknown run {run_id}[/] (the gateway keeps recent runs only)")
        raise typer.Exit(6)
    if output is OutputFormat.TABLE:
        console.print(f"run [bold]{run_id}[/]: {state.status}")
        for stage, figures in (state.document.get("stages") or {}).items():
            console.print(f"  {stage}: {escape(json.dumps(figures, default=str))}")
    else:
        emit(output, state.document)
    raise typer.Exit(EXIT_CODES[RunStatus(state.status)] if state.final else 0)


def _status_from_history(client: AoetlClient, run_id: str, output: OutputFormat) -> NoReturn:
    """A run whose result and events are past their retention: its run history summary, said to be one."""
    from aoetl.commands.run_display import EXIT_CODES
    from aoetl.commands.runs import find_summary, print_summary, summary_document

    summary = find_summary(client, run_id)
    if summary is None:
        err_console.print(f"[red]unknown run {run_id}[/]")
        raise typer.Exit(6)
    if output is OutputFormat.TABLE:
        print_summary(summary, console)
    else:
        emit(output, summary_document(summary))
    raise typer.Exit(EXIT_CODES[summary.status] if summary.status is not None else 0)


def _progress_document(progress: RunProgress, last: RunEvent) -> dict[str, object]:
    """A run still in progress as ``-o json|yaml`` shows it: the figures ``print_progress`` shows."""
    from shared.contracts import Stage  # loaded already by the command that got the progress

    return {
        "run_id": progress.run_id,
        "status": progress.status.value if progress.status is not None else "RUNNING",
        "splits_planned": progress.splits_planned,
        "splits_extracted": progress.splits_extracted,
        "stages": [stats.model_dump(mode="json") for stats in progress.stage_stats()],
        "bytes_loaded": progress.stage(Stage.LOAD).total.bytes,  # None: a sink that does not know
        "quality": [
            {"rule": q.rule, "checked_rows": q.checked_rows, "failed_rows": q.failed_rows}
            for q in progress.quality()
        ],
        "last_event": {"kind": last.kind.value, "at": last.at.isoformat()},
    }


def stop(
    run_id: Annotated[str, typer.Argument(help="the run to stop")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the run's result")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the result")] = 60.0,
    gateway: GatewayOpt = None,
) -> None:
    """Stop a run. A continuous run's readers commit what they read and leave its topic (submit the
    pipeline again to resume exactly there); a one-shot run still in progress is aborted. Ends CANCELLED."""
    from aoetl.commands.run_display import print_result
    from aoetl.transport import open_transport

    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        # a tenant's Kafka user may not read results (they hold every tenant's runs): it only asks
        finished = None if not wait and transport.asks_only else transport.result(run_id)
        if finished is not None:
            console.print(f"run {run_id} already finished")
            print_result(finished)
            return
        if not wait:
            transport.stop(run_id)
            console.print(f"stop of run [bold]{run_id}[/] requested")
            return
        stopped = transport.stop_and_wait(run_id, timeout)
    finally:
        transport.close()
    if stopped is None:
        err_console.print(f"[red]no result for run {run_id} within {timeout:.0f}s[/] (unknown run id?)")
        raise typer.Exit(5)
    print_result(stopped)


def results(
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (as -o json with --follow)")] = False,
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """Print pipeline results (JSON lines with --json).

    Through the gateway (``GET /results``, its cursor polled with --follow): the caller's tenant's."""
    from aoetl.transport import open_transport

    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        _show(transport.results(follow, from_beginning), follow, _lines(as_json, output))
    finally:
        transport.close()


def alerts(
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (as -o json with --follow)")] = False,
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """Print alerts (JSON lines with --json).

    Through the gateway (``GET /alerts``): the ones it keeps of the caller's tenant; with --follow its
    listing asked for again every half second, each alert shown once."""
    from aoetl.transport import open_transport

    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        _show(transport.alert_stream(follow, from_beginning), follow, _lines(as_json, output))
    finally:
        transport.close()


def _lines(as_json: bool, output: OutputFormat) -> OutputFormat | None:
    """``--json`` is JSON lines, kept as it was; else ``-o``. None: JSON lines."""
    return None if as_json else output


def _show(records: Iterable[Contract], follow: bool, output: OutputFormat | None) -> None:
    """Print records as ``-o`` says: a listing (not ``--follow``) as one JSON or YAML document, a followed
    stream record by record (JSON lines; YAML documents separated by ``---``), since it has no end to wait
    for; ``output`` None is JSON lines."""
    from aoetl.commands.run_display import print_result
    from shared.contracts import Alert, PipelineResult

    collected: list[dict[str, object]] = []
    try:
        for value in records:
            if output is None or (follow and output is OutputFormat.JSON):
                print(json.dumps(value.model_dump(mode="json"), default=str), flush=True)
            elif output is not OutputFormat.TABLE and not follow:
                collected.append(value.model_dump(mode="json"))
            elif output is OutputFormat.YAML:
                typer.echo("---")
                emit(output, value.model_dump(mode="json"))
            elif isinstance(value, PipelineResult):
                print_result(value)
            elif isinstance(value, Alert):
                console.print(
                    f"{value.at:%Y-%m-%d %H:%M:%S} [bold]{value.severity.value}[/] {value.kind.value} "
                    f"run={value.run_id or '-'}: {escape(value.message)}"
                )
    except KeyboardInterrupt:
        pass
    if output not in (None, OutputFormat.TABLE) and not follow:
        emit(output, collected)
