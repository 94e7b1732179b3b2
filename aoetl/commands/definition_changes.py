"""What ``aoetl definitions apply --dry-run`` would change, and ``aoetl definitions delete``.

``--dry-run`` checks each file as ``aoetl validate`` does (the transform steps' SQL, the spec policy of
this environment, the triggers), reads the registered definitions (from Kafka, or the gateway's REST API
with ``--gateway``) and shows, per definition, whether it would be created, updated (with a unified diff
of the registered document against the file's) or left unchanged; it writes nothing, not even an audit
record.

``delete`` removes a definition the way the gateway's ``DELETE /definitions/{name}`` does: a tombstone
(a record with no value) keyed by the name on the compacted definitions topic, which every reader of it
(orchestrator, gateway) applies as "gone" and compaction eventually forgets. Directly on Kafka it is
audited like ``apply`` (``aoetl.commands.door``) and only a definition of the caller's tenant can be
deleted; through ``--gateway`` the gateway checks and audits it.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.markup import escape

from aoetl.client import AoetlClient
from aoetl.commands.config import gateway_client, load_config, refusal_hint
from aoetl.commands.door import DoorAudit
from aoetl.failures import gateway_exit_code
from aoetl.output import CliConsole
from shared.contracts import PipelineDefinition
from shared.kafka.delivery import produce_sync
from shared.kafka.topics import Topics

if TYPE_CHECKING:
    from aoetl.commands.definitions import DefinitionFile

console = CliConsole()
err_console = CliConsole(stderr=True)

EXIT_INVALID = 2
EXIT_NOT_FOUND = 1  # a command's own refusal (aoetl.failures.EXIT_CODES)


def registered(gateway: str | None) -> dict[str, Any]:
    """The registered definitions by name, from the gateway or from Kafka."""
    if gateway:
        with gateway_client(gateway) as http:
            response = http.get("/definitions")
        if response.status_code >= 300:
            err_console.print(
                f"[red]{response.status_code} {escape(response.text)}{refusal_hint(response.status_code)}[/]"
            )
            raise typer.Exit(gateway_exit_code(response.status_code, EXIT_INVALID))
        return {row["name"]: PipelineDefinition.model_validate(row) for row in response.json()}
    from aoetl.commands.definitions import read_definitions

    client = AoetlClient()
    try:
        return dict(read_definitions(client))
    finally:
        client.close()


def check_files(specs: list[DefinitionFile], tenant: str) -> None:
    """Exit 2 after printing every problem ``aoetl validate`` would find in any of ``specs``."""
    from aoetl.commands.data_roots import default_to_dev_data_roots
    from aoetl.spec_files import sql_issues
    from shared.policy import check_spec, check_triggers, load_policy

    default_to_dev_data_roots()
    policy = load_policy()
    failed = False
    for spec in specs:
        issues = sql_issues(spec.spec) + check_spec(spec.spec, policy, tenant=tenant)
        issues += check_triggers(spec.triggers, policy)
        for issue in issues:
            failed = True
            err_console.print(
                f"  [red]✗[/] {spec.name}: [bold]{escape(issue.path or '(spec)')}[/]: {escape(issue.reason)}"
            )
    if failed:
        raise typer.Exit(EXIT_INVALID)


def _document(spec: Any, triggers: list[Any]) -> str:
    """A definition as the diff shows it: as ``aoetl suggest`` writes specs (fields left at their default
    omitted, the ``op``/``type``/``rule`` of every step, rule and trigger kept), so the diff shows what
    was decided."""
    from shared.agent.suggest import compact_dump  # the spec writer's own dump (its imports: here only)

    body: dict[str, Any] = {"spec": compact_dump(spec)}
    if triggers:
        body["triggers"] = [compact_dump(t) for t in triggers]
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def dry_run(specs: list[DefinitionFile], gateway: str | None) -> None:
    """Print what ``apply`` would do with ``specs``; change nothing."""
    tenant = load_config().tenant_or_default
    check_files(specs, tenant)
    current = registered(gateway)
    for spec in specs:
        existing = current.get(spec.name)
        if existing is None:
            console.print(f"{spec.name}: would be created as v1")
            continue
        if not gateway and existing.tenant != tenant:
            err_console.print(f"[red]{spec.name}: the name is taken by another tenant; choose another[/]")
            raise typer.Exit(EXIT_INVALID)
        before = _document(existing.spec, existing.triggers)
        after = _document(spec.spec, spec.triggers)
        if before == after:
            console.print(f"{spec.name} v{existing.version}: unchanged")
            continue
        console.print(f"{spec.name}: would be updated v{existing.version} → v{existing.version + 1}")
        diff = difflib.unified_diff(
            before.splitlines(), after.splitlines(), f"{spec.name} v{existing.version}", "file", lineterm=""
        )
        for line in diff:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            console.print(f"[{style}]{escape(line)}[/]" if style else escape(line), highlight=False)
    console.print("dry run: nothing was written")


def delete(name: str, yes: bool, gateway: str | None) -> None:
    """Delete definition ``name`` (see the module docstring)."""
    if gateway:
        if not yes and not typer.confirm(f"delete definition {name!r} (through {gateway})?", default=False):
            raise typer.Exit(EXIT_NOT_FOUND)
        with gateway_client(gateway) as http:
            response = http.delete(f"/definitions/{name}")
        if response.status_code == 404:
            err_console.print(f"[red]no definition named {name!r}[/]")
            raise typer.Exit(EXIT_NOT_FOUND)
        if response.status_code >= 300:
            hint = refusal_hint(response.status_code)
            err_console.print(f"[red]{name}: {response.status_code} {escape(response.text)}{hint}[/]")
            raise typer.Exit(gateway_exit_code(response.status_code, EXIT_INVALID))
        console.print(f"deleted {name}")
        return
    from aoetl.commands.definitions import read_definitions

    client = AoetlClient()
    try:
        audit = DoorAudit(client)
        existing = read_definitions(client).get(name)
        if existing is None or existing.tenant != audit.tenant:
            err_console.print(f"[red]no definition named {name!r}[/]")  # another tenant's: not revealed
            raise typer.Exit(EXIT_NOT_FOUND)
        if not yes and not typer.confirm(f"delete definition {name!r} v{existing.version}?", default=False):
            raise typer.Exit(EXIT_NOT_FOUND)
        audit.allowed("definitions.delete", f"definition/{name}")
        client.check_reachable()
        # a tombstone: what the gateway's DELETE publishes (services/gateway/core.py)
        produce_sync(client._producer, client.topic(Topics.DEFINITIONS), None, key=name)
        console.print(f"deleted {name} (v{existing.version})")
    finally:
        client.close()
