"""``aoetl dlq list|show|replay``: inspect dead letters and re-drive them into the stage they failed at.

A replayed message keeps its key and payload, so the stage processes the very same task or batch again;
batch ids are deterministic and every sink applies a batch id once, so replaying (even twice) applies a
record at most once. Quarantined rows (``payload_format=arrow_ipc``) are not messages of any stage; they
can be shown and exported, not replayed. A replay is audited per dead letter as ``dlq.replay`` (on Kafka
by the door, ``aoetl.commands.door``; through the gateway by the gateway).

Every command also goes through the gateway (``--gateway`` or a context with ``via = "gateway"``,
``aoetl.transport``): ``list`` is ``GET /dead-letters``, ``show`` is ``GET /dead-letters/{id}`` (the payload
read back from the topic by the gateway), ``replay`` is ``POST /dead-letters/{id}/replay`` per letter
(``?dry_run=true`` with ``--dry-run``: the gateway checks each would be re-driven, and writes nothing).
The gateway re-drives only onto this deployment's stage inputs; a continuous pipeline's own source topic is
re-driven on Kafka.

A message key is bytes, not text: documents show it as ``origin.key_base64`` on both paths (a key that is
not UTF-8 must not stop ``-o json``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from aoetl.client import AoetlClient
from aoetl.commands.pipelines import GatewayOpt
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit
from shared.contracts import DeadLetter
from shared.dead_letters import REPLAYABLE_FORMAT, redrive_headers
from shared.kafka.clients import produce_sync
from shared.kafka.topics import Topics

app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)
console = CliConsole()


def matching_letters(
    client: AoetlClient, run: str | None, stage: str | None, error_class: str | None
) -> Iterator[DeadLetter]:
    with client.reader(Topics.DEAD_LETTERS, from_beginning=True) as reader:
        for _, value in reader.drain({Topics.DEAD_LETTERS: DeadLetter}):
            if not isinstance(value, DeadLetter):
                continue
            if run and value.run_id != run:
                continue
            if stage and value.stage.value != stage:
                continue
            if error_class and value.error.error_class != error_class:
                continue
            yield value


RunOpt = Annotated[str | None, typer.Option("--run", help="only this run id")]
StageOpt = Annotated[str | None, typer.Option("--stage", help="extract, transform, load, orchestrate, ...")]
ErrorOpt = Annotated[str | None, typer.Option("--error-class", help="e.g. CastError")]


@app.command("list")
def list_(
    run: RunOpt = None,
    stage: StageOpt = None,
    error_class: ErrorOpt = None,
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """Dead letters, oldest first.

    Through the gateway (``GET /dead-letters``): the ones it keeps of the caller's tenant."""
    from aoetl.transport import open_transport

    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        letters = transport.dead_letters(run, stage, error_class)
    finally:
        transport.close()
    emit(output, letters, lambda: _table(letters), console)
    if output is OutputFormat.TABLE:
        console.print(f"{len(letters)} dead letter(s)")


def _table(letters: list[dict[str, Any]]) -> Table:
    """Dead letters as documents (``described``, or the gateway's view: the same fields shown)."""
    shown = Table("id", "at", "stage", "error", "rule", "run", "origin")
    for letter in letters:
        o, error = letter["origin"], letter["error"]
        shown.add_row(
            letter["dead_letter_id"],
            f"{datetime.fromisoformat(str(letter['at'])):%Y-%m-%d %H:%M:%S}",
            str(letter["stage"]),
            escape(f"{error['error_class']}: {str(error['message'])[:60]}"),
            letter.get("rule") or "",
            letter.get("run_id") or "",
            f"{o['topic']}[{o['partition']}]@{o['offset']}",
        )
    return shown


def described(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as a document: everything but its payload's bytes (``show --export`` has those), its
    key as base64, as the gateway's view has it (bytes are not text: a key may be any bytes)."""
    info = letter.model_dump(mode="json", exclude={"payload": True, "origin": {"key"}})
    key = letter.origin.key
    info["origin"]["key_base64"] = base64.b64encode(key).decode() if key is not None else None
    info["payload_bytes"] = len(letter.payload)
    return info


@app.command()
def show(
    dead_letter_id: str,
    export: Annotated[Path | None, typer.Option(help="write quarantined rows to Parquet")] = None,
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """One dead letter in full; quarantined rows are decoded and previewed.

    Through the gateway (``GET /dead-letters/{id}``): the caller's tenant's letter, its payload included."""
    from aoetl.transport import open_transport

    transport = open_transport(gateway)
    try:
        letter = transport.dead_letter(dead_letter_id)
    finally:
        transport.close()
    if letter is None:
        console.print(f"[red]no dead letter {dead_letter_id}[/]")
        raise typer.Exit(1)
    if output is not OutputFormat.TABLE:  # the document alone, for jq / yq (no preview lines around it)
        emit(output, described(letter))
        if export is not None and letter.payload_format == "arrow_ipc":
            _export(letter, export)
        return
    console.print_json(json.dumps(described(letter), default=str))
    if letter.payload_format == "arrow_ipc":
        # Arrow is imported for quarantined rows only, not for every dlq command (cold start, aoetl.cli)
        from shared.batch import decode_table

        rows = decode_table(letter.payload)
        console.print(f"{rows.num_rows} quarantined row(s); first ones:")
        console.print(rows.slice(0, 5).to_pylist())
        if export is not None:
            _export(letter, export)
            console.print(f"written to {export}")


def _export(letter: DeadLetter, path: Path) -> None:
    import pyarrow.parquet as pq

    from shared.batch import decode_table

    pq.write_table(decode_table(letter.payload), path)


@app.command()
def replay(
    one: Annotated[str | None, typer.Argument(metavar="[ID]", help="the dead letter to replay")] = None,
    dead_letter_id: Annotated[list[str] | None, typer.Option("--id", help="replay these ids")] = None,
    run: RunOpt = None,
    stage: StageOpt = None,
    error_class: ErrorOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list what would be replayed; publish nothing")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """Re-publish dead letters (their original bytes) to the topic they failed on.

    Through the gateway (``POST /dead-letters/{id}/replay``, one call a letter): the caller's tenant's."""
    from aoetl.transport import open_transport

    ids = [*([one] if one else []), *(dead_letter_id or [])]
    if not (ids or run or stage or error_class):
        console.print("[red]say which: ID, --id, --run, --stage or --error-class[/]")
        raise typer.Exit(2)
    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        chosen = [
            d
            for d in transport.dead_letters(run, stage, error_class)
            if (not ids or d["dead_letter_id"] in ids) and d["payload_format"] == REPLAYABLE_FORMAT
        ]
        if not chosen:
            console.print("nothing to replay (quarantined rows cannot be replayed; see `aoetl dlq show`)")
            raise typer.Exit(1)
        if (
            not dry_run
            and not yes
            and not typer.confirm(f"replay {len(chosen)} dead letter(s) into their origin topics?")
        ):
            raise typer.Exit(1)
        done = transport.replay(chosen, dry_run)
    finally:
        transport.close()
    emit(output, done, lambda: _table(done), console)
    if output is OutputFormat.TABLE and dry_run:
        console.print(f"dry run: {len(done)} dead letter(s) would be replayed; nothing was published")
    elif output is OutputFormat.TABLE:
        console.print(f"replayed {len(done)} dead letter(s)")


def replay_letters(client: AoetlClient, letters: list[DeadLetter]) -> int:
    for letter in letters:
        produce_sync(
            client._producer,
            letter.origin.topic,
            letter.payload,
            key=letter.origin.key,
            headers=[*redrive_headers(letter)],
        )
    return len(letters)
