"""Agent commands: ``profile`` a source, ``suggest`` a spec for it, ``plan`` a pipeline from a sentence.

Cold start (see ``aoetl.cli``): at its top this module imports only the standard library, typer and rich;
each command imports the agent in its body: profiling and suggestions bring Polars, Arrow and DuckDB, and
only ``plan`` brings the planner (and LangChain, when a model is configured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from aoetl.commands.data_roots import default_to_dev_data_roots
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit

if TYPE_CHECKING:
    from shared.agent.planner import PlanOutcome
    from shared.agent.profile import SourceProfile

console = CliConsole()
err_console = CliConsole(stderr=True)
EXIT_FAILED = 2

SourceArg = Annotated[
    str, typer.Argument(help="a data file path/glob, or a JSON/YAML source spec (file or inline)")
]
RowsOpt = Annotated[
    int | None, typer.Option("--rows", help="rows to sample (default AOETL_AGENT_SAMPLE_ROWS)")
]
ConnectionOpt = Annotated[
    str | None,
    typer.Option("--connection", help="the declared s3 connection an s3:// source is read through"),
]


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]✗[/] {escape(message)}")
    return typer.Exit(EXIT_FAILED)


def _profile(source_arg: str, rows: int | None, connection: str | None = None) -> SourceProfile:
    from shared.agent.profile import profile_source
    from shared.agent.settings import AgentSettings
    from shared.agent.sources import source_from_argument
    from shared.errors import AoetlError
    from shared.settings import load_settings

    default_to_dev_data_roots()
    try:
        source = source_from_argument(source_arg, connection)
        return profile_source(source, sample_rows=rows or load_settings(AgentSettings).agent_sample_rows)
    except AoetlError as exc:
        raise _fail(str(exc)) from exc


def _cell(value: Any) -> str:
    return "" if value is None else escape(str(value))


def print_profile(profile: SourceProfile) -> None:
    table = Table(title=f"profile of {profile.sample_description()}", title_justify="left")
    table.add_column("column", no_wrap=True)
    for header in ("type", "nulls", "distinct", "key", "pii", "min", "max", "notes"):
        table.add_column(header)
    for c in profile.columns:
        kind = c.inferred_type.value if c.inferred_type else "?"
        if c.formats:
            kind += f" ({', '.join(c.formats)})"
        key = "unique" if c.name in profile.candidate_keys else ""
        if c.name in profile.key_duplicates:
            key = f"{profile.key_duplicates[c.name]} dup"
        notes = list(c.notes)
        if c.na_markers:
            notes.append("NA: " + ", ".join(repr(m) for m in c.na_markers))
        if c.thousands_separator:
            notes.append("thousands separators")
        table.add_row(
            escape(c.name),
            escape(kind),
            f"{c.null_rate:.0%}",
            str(c.distinct_count),
            key,
            c.pii.value if c.pii else "",
            _cell(c.min),
            _cell(c.max),
            escape("; ".join(notes)),
        )
    console.print(table)
    if profile.duplicate_rows:
        console.print(f"[yellow]{profile.duplicate_rows} duplicated row(s)[/]")


def profile(
    source: SourceArg,
    as_json: Annotated[bool, typer.Option("--json", help="print the profile as JSON (as -o json)")] = False,
    rows: RowsOpt = None,
    output: OutputOption = OutputFormat.TABLE,
    connection: ConnectionOpt = None,
) -> None:
    """Profile a sample of a source (a file, glob, s3:// object or source spec): types, nulls, keys, PII,
    ranges."""
    result = _profile(source, rows, connection)
    if as_json or output is OutputFormat.JSON:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    elif output is OutputFormat.YAML:
        emit(output, result.model_dump(mode="json"))
    else:
        print_profile(result)


def suggest(
    source: SourceArg,
    to: Annotated[
        str, typer.Option("--to", help="postgres://table, duckdb:PATH#table, parquet:DIR, jsonl:DIR")
    ],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write the spec here (else stdout)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="pipeline name (default: from the source)")] = None,
    rows: RowsOpt = None,
    connection: ConnectionOpt = None,
    to_connection: Annotated[
        str | None,
        typer.Option(
            "--to-connection", help="the s3 connection of an s3:// destination (default: --connection)"
        ),
    ] = None,
) -> None:
    """Suggest a ready pipeline spec for a source, proven by a dry run on the sample."""
    from aoetl.spec_paths import portable_spec_paths, resolve_spec_paths
    from shared.agent.suggest import parse_destination_uri, spec_to_yaml, suggest_spec
    from shared.errors import AoetlError

    result = _profile(source, rows, connection)
    try:
        destination = parse_destination_uri(to, connection=to_connection or connection)
        suggestion = suggest_spec(result, destination, name=name)
    except AoetlError as exc:
        raise _fail(str(exc)) from exc
    # the source and destination were named from the working directory; the spec says them as its own file
    # reads them back (``aoetl.spec_paths``): relative to where it is written, absolute on stdout
    if output is not None:
        text = spec_to_yaml(portable_spec_paths(suggestion.spec, output.parent))
    else:
        text = spec_to_yaml(resolve_spec_paths(suggestion.spec, Path.cwd()))
    for note in suggestion.notes:
        err_console.print(f"  [cyan]→[/] {escape(note)}")
    report = suggestion.dry_run
    err_console.print(
        f"[green]✓[/] dry run: {report.rows_in} rows in, {report.rows_out} out, "
        f"{report.rows_quarantined} quarantined, {len(report.violations)} warning(s)"
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err_console.print(f"[green]✓[/] wrote {output}")


def print_outcome(outcome: PlanOutcome) -> None:
    for call in outcome.tool_calls:
        mark = "[green]✓[/]" if call.ok else "[red]✗[/]"
        err_console.print(f"  {mark} {call.name}: {escape(call.summary)}")
    for note in outcome.notes:
        err_console.print(f"  [cyan]→[/] {escape(note)}")
    for reason in outcome.reasons:
        err_console.print(f"  [red]✗[/] {escape(reason)}")


def plan(
    intent: Annotated[
        str, typer.Argument(help='e.g. "load orders.csv into postgres, drop cancelled orders"')
    ],
    source: Annotated[str | None, typer.Option(help="the source, if the sentence does not name it")] = None,
    to: Annotated[str | None, typer.Option("--to", help="destination URI the spec must write to")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="submit without asking")] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="also write the spec here")] = None,
) -> None:
    """Plan a pipeline from a sentence (needs AOETL_LLM_MODEL unless it is just a path), then submit it."""
    from rich.syntax import Syntax  # brings pygments

    from shared.agent.planner import IntentPlanner  # brings LangChain
    from shared.agent.settings import AgentSettings
    from shared.agent.suggest import spec_to_yaml
    from shared.errors import AoetlError
    from shared.settings import load_settings

    default_to_dev_data_roots()
    try:
        # load_settings: a bad AOETL_LLM_* value is a readable ConfigurationError, not a traceback
        planner = IntentPlanner.from_settings(load_settings(AgentSettings))
    except AoetlError as exc:
        raise _fail(str(exc)) from exc
    outcome = planner.plan(intent, source_hint=source, destination=to)
    print_outcome(outcome)
    if outcome.spec is None:
        raise _fail(f"no spec: rejected after {outcome.attempts} draft(s)")
    from aoetl.spec_paths import portable_spec_paths, resolve_spec_paths

    # the sentence named its files from the working directory; what is submitted names them absolutely
    spec = resolve_spec_paths(outcome.spec, Path.cwd())
    text = spec_to_yaml(spec)
    console.print(Syntax(text, "yaml"))
    if output is not None:
        output.write_text(spec_to_yaml(portable_spec_paths(spec, output.parent)), encoding="utf-8")
        err_console.print(f"[green]✓[/] wrote {output}")
    if not yes and not typer.confirm("Submit this pipeline?", default=False):
        err_console.print("not submitted")
        return
    from aoetl.client import AoetlClient  # imported late: Kafka is only needed to submit
    from aoetl.commands.door import submit_audited

    client = AoetlClient()
    try:
        request = submit_audited(client, spec)
    finally:
        client.close()
    console.print(request.run_id)
