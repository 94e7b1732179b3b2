"""``aoetl schema list|show|spec``: the Avro records of the wire contracts, and the spec's JSON Schema.

``list`` is every record of the schema catalog (``shared.avro.catalog``, read from ``schemas/``): a
*message* (a record written on its own to a topic) has a version history (``schemas/history/<name>/``),
each version still readable, the last one the current schema; any other record is embedded in messages
and versioned with them. ``show NAME`` prints a record's expanded Avro schema (every type it uses inlined,
as a writer's fingerprint covers it): the current one, or ``--version N`` of a message's history. NAME
is the full name (``io.aoetl.PipelineResult``) or, when only one record has it, the short one
(``PipelineResult``). ``spec`` prints the JSON Schema of a pipeline spec, for editors that complete YAML
and JSON against one (the destination plugins installed here included).

Exit codes: 0; 1 for a name or version the catalog does not have (one line on stderr saying where to look).

Cold start: the catalog (fastavro) and the spec models are imported inside the commands, never at the top
(``aoetl.cli``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from aoetl.output import CliConsole, OutputFormat, OutputOption, emit

if TYPE_CHECKING:
    from shared.avro.catalog import SchemaCatalog

app = typer.Typer(
    help="The Avro records of the wire contracts and their versions; the spec's JSON Schema.",
    no_args_is_help=True,
)
console = CliConsole()
err_console = CliConsole(stderr=True)

EXIT_NOT_FOUND = 1


def _catalog() -> SchemaCatalog:
    from shared.avro.catalog import SchemaCatalog

    return SchemaCatalog.default()


def _records(catalog: SchemaCatalog) -> list[str]:
    return [name for name in catalog.names() if catalog.entry(name).json.get("type") == "record"]


def _described(catalog: SchemaCatalog, name: str) -> dict[str, Any]:
    entry, versions = catalog.entry(name), catalog.history(name)
    return {
        "name": name,
        "message": bool(versions),
        "versions": len(versions) if versions else None,
        "fields": len(entry.json.get("fields", [])),
        "fingerprint": entry.fingerprint.hex(),
        "doc": entry.json.get("doc", ""),
    }


@app.command("list")
def list_schemas(
    messages: Annotated[
        bool, typer.Option("--messages", help="only the messages (records with a version history)")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Every Avro record of the catalog: the messages with their versions, and the records they embed."""
    catalog = _catalog()
    rows = [_described(catalog, name) for name in _records(catalog)]
    if messages:
        rows = [row for row in rows if row["message"]]

    def table() -> Table:
        shown = Table("name", "versions", "fields", "fingerprint", "doc")
        for row in rows:
            versions = f"v1..v{row['versions']}" if row["versions"] and row["versions"] > 1 else "v1"
            shown.add_row(
                escape(row["name"]),
                versions if row["message"] else "[dim]embedded[/]",
                str(row["fields"]),
                row["fingerprint"],
                escape(row["doc"].split(". ")[0][:70]),
            )
        return shown

    emit(output, rows, table, console)
    if output is OutputFormat.TABLE:
        console.print(f"{len(rows)} record(s); `aoetl schema show NAME` prints one")


def resolve(catalog: SchemaCatalog, name: str) -> str | None:
    """The record's full name: ``name`` itself, or the one record whose short name it is."""
    records = _records(catalog)
    if name in records:
        return name
    matches = [full for full in records if full.rsplit(".", 1)[-1] == name]
    return matches[0] if len(matches) == 1 else None


def _not_found(message: str) -> typer.Exit:
    err_console.print(f"[red]{escape(message)}[/]")
    return typer.Exit(EXIT_NOT_FOUND)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="the record's full name, or its short name when unique")],
    version: Annotated[
        str | None, typer.Option("--version", "-V", help="a version of a message's history: 3 or v3")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """One Avro record's schema, expanded (every type it uses inlined): the current one, or a version."""
    catalog = _catalog()
    full = resolve(catalog, name)
    if full is None:
        raise _not_found(f"no Avro record {name!r} in the catalog: `aoetl schema list` shows them")
    versions = catalog.history(full)
    number = len(versions) if versions else None
    schema = catalog.entry(full).json
    if version is not None:
        text = version.strip().lower().removeprefix("v")
        if not versions:
            raise _not_found(f"{full} has no versions of its own: it is embedded in messages")
        if not text.isdigit() or not 1 <= int(text) <= len(versions):
            raise _not_found(f"{full} has versions v1 to v{len(versions)}, not {version!r}")
        number = int(text)
        schema = versions[number - 1].json
    if output is not OutputFormat.TABLE:  # the schema alone, for jq / yq and for other Avro tools
        emit(output, schema)
        return
    label = "embedded"
    if number is not None:
        current = versions[number - 1].canonical_form == catalog.entry(full).canonical_form
        label = f"v{number} of {len(versions)}" + (" (current)" if current else "")
    console.print(f"[bold]{escape(full)}[/] {label}")
    console.print_json(json.dumps(schema))


@app.command()
def spec(output: OutputOption = OutputFormat.TABLE) -> None:
    """The JSON Schema of a pipeline spec (YAML or JSON), for editor completion (`> spec.schema.json`)."""
    from shared.spec.models import PipelineSpec

    document = PipelineSpec.model_json_schema()
    if output is OutputFormat.TABLE:  # the same JSON, highlighted on a terminal
        console.print_json(json.dumps(document))
    else:
        emit(output, document)
