"""``aoetl definitions apply|delete|list``: registered pipelines, kept in the compacted definitions topic.

Both talk to Kafka directly by default (``apply`` audited there, ``aoetl.commands.door``); ``--gateway URL``
(or ``AOETL_GATEWAY_URL``) goes through a running gateway's REST API instead (no broker access needed from
the operator's machine), with the configured token (``aoetl.commands.config``; ``apply`` needs an admin).
"""

from __future__ import annotations

import getpass
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import TopicPartition
from rich.markup import escape
from rich.table import Table

from aoetl.client import AoetlClient
from aoetl.commands.config import gateway_client, refusal_hint
from aoetl.commands.door import DoorAudit
from aoetl.failures import gateway_exit_code
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit
from aoetl.spec_files import load_definition_file
from shared.contracts import PipelineDefinition
from shared.kafka.clients import make_consumer
from shared.kafka.topics import Topics
from shared.schedules import next_tick
from shared.spec import SpecError
from shared.spec.models import PipelineSpec
from shared.triggers import DefinitionTrigger, ScheduleTrigger, TopicTrigger

app = typer.Typer(help="Register, list and delete pipeline definitions.", no_args_is_help=True)
console = CliConsole()
err_console = CliConsole(stderr=True)

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
EXIT_INVALID = 2

GatewayOption = Annotated[
    str | None,
    typer.Option(
        "--gateway", envvar="AOETL_GATEWAY_URL", help="use this gateway's REST API instead of Kafka"
    ),
]


def spec_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in SPEC_SUFFIXES and p.is_file())
    return [path]


@dataclass(frozen=True)
class DefinitionFile:
    spec: PipelineSpec
    triggers: list[DefinitionTrigger]

    @property
    def name(self) -> str:
        return self.spec.name

    def document(self) -> dict[str, Any]:
        """The JSON body of ``PUT /definitions/{name}``: the spec with its triggers beside its keys."""
        body = self.spec.model_dump(mode="json")
        if self.triggers:
            body["triggers"] = [t.model_dump(mode="json") for t in self.triggers]
        return body


def load_definition(path: Path) -> DefinitionFile:
    """A spec file, optionally with a top-level ``triggers:`` list (webhook and topic rules); its relative
    paths resolved against the file's directory (``aoetl.spec_files``)."""
    return DefinitionFile(*load_definition_file(path))


def load_all(paths: list[Path]) -> list[DefinitionFile]:
    """Every definition, or exit 2 after printing every problem of every file (nothing is applied then)."""
    specs: list[DefinitionFile] = []
    failed = False
    for path in paths:
        try:
            specs.append(load_definition(path))
        except SpecError as exc:
            failed = True
            err_console.print(f"[bold red]{path}: invalid pipeline spec[/]")
            for issue in exc.issues:
                err_console.print(
                    f"  [red]✗[/] [bold]{escape(issue.path or '(spec)')}[/]: {escape(issue.reason)}"
                )
    if failed:
        raise typer.Exit(EXIT_INVALID)
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        err_console.print(f"[bold red]several files define: {', '.join(duplicates)}[/]")
        raise typer.Exit(EXIT_INVALID)
    return specs


def read_definitions(client: AoetlClient, timeout: float = 30.0) -> dict[str, PipelineDefinition]:
    """The topic's current content: every record up to the high watermarks, tombstones applied."""
    topic = client.topic(Topics.DEFINITIONS)
    client.check_reachable()  # fail fast: the waits below are 30 s each
    consumer = make_consumer(client.settings.kafka, f"aoetl-cli-{uuid.uuid4().hex}")
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in partitions
        }
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        found: dict[str, PipelineDefinition] = {}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout}s")
            # consume() returns early only with a full batch, so ask in short rounds
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                name = (msg.key() or b"").decode()
                value = msg.value()
                if value is None:
                    found.pop(name, None)
                else:
                    found[name] = client.serde.decode(value, PipelineDefinition)
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    pending.discard(msg.partition() or 0)
        return found
    finally:
        consumer.close()


@app.command()
def apply(
    path: Annotated[
        Path, typer.Argument(help="a spec file, or a directory of *.yaml / *.yml / *.json specs")
    ],
    gateway: GatewayOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="check the files and show what would change (a diff per definition); write nothing",
        ),
    ] = False,
) -> None:
    """Register (or update) each spec under its name; unchanged specs keep their version."""
    specs = load_all(spec_files(path))
    if dry_run:
        from aoetl.commands.definition_changes import dry_run as show_changes

        show_changes(specs, gateway)
        return
    user = getpass.getuser()
    if gateway:
        with gateway_client(gateway) as http:
            for spec in specs:
                response = http.put(f"/definitions/{spec.name}", json=spec.document())
                if response.status_code >= 300:
                    hint = refusal_hint(response.status_code)
                    err_console.print(
                        f"[red]{spec.name}: {response.status_code} {escape(response.text)}{hint}[/]"
                    )
                    raise typer.Exit(gateway_exit_code(response.status_code, EXIT_INVALID))
                console.print(f"{spec.name} v{response.json()['version']}")
        return
    client = AoetlClient()
    audit = DoorAudit(client)
    tenant = audit.config.tenant_or_default
    try:
        current = read_definitions(client)
        for spec in specs:
            existing = current.get(spec.name)
            if existing is not None and existing.tenant != tenant:
                err_console.print(f"[red]{spec.name}: the name is taken by another tenant; choose another[/]")
                raise typer.Exit(EXIT_INVALID)
            if existing is not None and existing.spec == spec.spec and existing.triggers == spec.triggers:
                console.print(f"{spec.name} v{existing.version} (unchanged)")
                continue
            version = 1 if existing is None else existing.version + 1
            audit.allowed("definitions.put", f"definition/{spec.name}")
            client.publish(
                Topics.DEFINITIONS,
                spec.name,
                PipelineDefinition(
                    name=spec.name,
                    version=version,
                    spec=spec.spec,
                    updated_by=user,
                    tenant=tenant,
                    triggers=spec.triggers,
                ),
            )
            console.print(f"{spec.name} v{version}")
    finally:
        client.close()


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="the definition's name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    gateway: GatewayOption = None,
) -> None:
    """Delete a definition: a tombstone on the definitions topic, as the gateway's DELETE publishes."""
    from aoetl.commands.definition_changes import delete as delete_definition

    delete_definition(name, yes, gateway)


@app.command("list")
def list_definitions(gateway: GatewayOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """The registered definitions: name, version, source -> destination, triggers, next scheduled run, last
    change."""
    from aoetl.transport import open_transport

    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        definitions = transport.definitions()
    finally:
        transport.close()

    now = datetime.now(UTC)
    next_fires = {d.name: next_fire(d, now) for d in definitions}

    def table() -> Table:
        shown = Table("name", "version", "source → destination", "triggers", "next run", "updated", "by")
        for d in definitions:
            fire = next_fires[d.name]
            shown.add_row(
                d.name,
                str(d.version),
                f"{d.spec.source.type} → {d.spec.destination.type}",
                ", ".join(_describe(t) for t in d.triggers) or "-",
                fire.isoformat(timespec="seconds") if fire else "-",
                d.updated_at.isoformat(timespec="seconds"),
                d.updated_by,
            )
        return shown

    rows = [{**d.model_dump(mode="json"), "next_fire": _iso(next_fires[d.name])} for d in definitions]
    emit(output, rows, table, console)


def next_fire(definition: PipelineDefinition, now: datetime) -> datetime | None:
    """When the definition's schedules next start a run (UTC), or None when it has no schedule."""
    ticks = [
        next_tick(t.cron, t.timezone, now) for t in definition.triggers if isinstance(t, ScheduleTrigger)
    ]
    return min(ticks, default=None)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds") if at else None


def _describe(trigger: DefinitionTrigger) -> str:
    if isinstance(trigger, TopicTrigger):
        return f"topic {trigger.topic}"
    if isinstance(trigger, ScheduleTrigger):
        return f"schedule {trigger.cron} ({trigger.timezone})"
    return f"webhook {trigger.source}/{trigger.event}"
