"""``aoetl context list|show|use``: the named contexts of the CLI's config file (``aoetl.contexts``).

``list`` shows every context (the one in use marked), ``show`` one context's fields (the token only as
"(set)") and, for each, the environment variable that overrides it now, if any; ``use NAME`` makes NAME
the file's ``current_context`` (``use --none`` forgets it). Contexts are written in the file by hand
(the module docstring of ``aoetl.contexts`` has an example); this command never prints a token.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aoetl.contexts import (
    CURRENT_KEY,
    config_path,
    contexts,
    overridden,
    read_config_data,
    selected_name,
    write_config_data,
)
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit

app = typer.Typer(
    help="Named contexts of the config file: which broker, gateway and token a command uses.",
    no_args_is_help=True,
)
console = CliConsole()
err_console = CliConsole(stderr=True)

EXIT_USAGE = 2


@app.command("list")
def list_contexts(output: OutputOption = OutputFormat.TABLE) -> None:
    """Every context of the config file; the one in use is marked."""
    data = read_config_data()
    known = contexts(data)
    current = selected_name(data)

    def table() -> Table:
        shown = Table("", "name", "bootstrap servers", "gateway", "topic suffix", "tenant")
        for name, context in sorted(known.items()):
            shown.add_row(
                "*" if name == current else "",
                escape(name),
                escape(context.bootstrap_servers or "-"),
                escape(context.gateway_url or "-"),
                escape(context.topic_suffix or "-"),
                escape(context.tenant or "-"),
            )
        return shown

    emit(output, [{"current": n == current, **c.shown()} for n, c in sorted(known.items())], table, console)
    if output is OutputFormat.TABLE and not known:
        console.print(f"no contexts in {config_path()}")


@app.command()
def show(
    name: Annotated[str | None, typer.Argument(help="a context (default: the one in use)")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """One context's fields, and the environment variables that override them now."""
    data = read_config_data()
    name = name or selected_name(data)
    known = contexts(data)
    if name is None or name not in known:
        err_console.print(f"[red]{'no context in use' if name is None else f'no context named {name!r}'}[/]")
        raise typer.Exit(1)
    fields = known[name].shown()
    overrides = {field: overridden(field) for field in fields}
    document = {**fields, "overridden_by": {f: v for f, v in overrides.items() if v}}

    def table() -> Table:
        shown = Table(
            "field", "value", "overridden by", title=f"context {escape(name)}", title_justify="left"
        )
        for field, value in fields.items():
            shown.add_row(field, escape(value or "-"), overrides.get(field) or "")
        return shown

    emit(output, document, table, console)


@app.command()
def use(
    name: Annotated[str | None, typer.Argument(help="the context to use from now on")] = None,
    none: Annotated[bool, typer.Option("--none", help="use no context from now on")] = False,
) -> None:
    """Make a context the one in use (the config file's current_context)."""
    if (name is None) == (not none):
        err_console.print("[red]give a context name, or --none[/]")
        raise typer.Exit(EXIT_USAGE)
    data = read_config_data()
    if name is not None and name not in contexts(data):
        listed = ", ".join(sorted(contexts(data))) or "none defined"
        err_console.print(f"[red]no context named {name!r} in {config_path()} (contexts: {listed})[/]")
        raise typer.Exit(EXIT_USAGE)
    if name is None:
        data.pop(CURRENT_KEY, None)
    else:
        data[CURRENT_KEY] = name
    write_config_data(data)
    console.print(f"using context {name}" if name else "using no context")
