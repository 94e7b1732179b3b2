"""``aoetl dev up|down|status``: the local stack for development.

``up`` prints the shell lines that point the CLI at the stack (``eval "$(aoetl dev up)"``). With
``--secure`` those include the CLI user's TLS and SCRAM settings; its password is read from a file of the
state folder by the printed line itself, so it never appears on the terminal (nor does ``status`` show
any secret).

``--tenant NAME`` (repeatable) adds a tenant of the Kafka door: its request topic and, with ``--secure``,
its Kafka user ``tenant-<name>`` (password in a 0600 file beside the CLI's); ``up`` then also prints, as
comments, how a shell becomes that tenant.

``--brokers 3`` runs a three-node KRaft cluster (combined broker+controller nodes) instead of the one
broker; topics then get 3 replicas and ``min.insync.replicas=2``. ``status`` shows a row per broker.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from aoetl.commands.config import DEFAULT_GATEWAY_URL, CliConfig, config_path, read_config_file, save_config
from aoetl.devstack import SERVICE_NAMES, DevStack
from aoetl.devstack.admin_key import LOCAL_TENANT, ensure_local_admin
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit
from shared.errors import ConfigurationError
from shared.kafka.acls import tenant_user
from shared.kafka.topics import checked_tenant
from shared.settings import ServiceSettings, load_settings

app = typer.Typer(
    help="Run the local Kafka + PostgreSQL stack (and optionally the services).", no_args_is_help=True
)
_console = CliConsole()


@app.command()
def up(
    services: Annotated[bool, typer.Option("--services", help="Also start every service.")] = False,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Replicas per service.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
    secure: Annotated[
        bool | None,
        typer.Option(
            "--secure/--plaintext",
            help="Kafka with TLS, a SCRAM user per service and least-privilege ACLs (or without: the "
            "default). Unset: as the stack was last started.",
        ),
    ] = None,
    brokers: Annotated[
        int | None,
        typer.Option(
            "--brokers",
            min=1,
            help="Kafka brokers: 1 (the default) or a KRaft cluster, e.g. 3 (topics then get 3 replicas, "
            "min.insync.replicas=2; plaintext only). Unset: as the stack was last started.",
        ),
    ] = None,
    tenants: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant",
            help="A tenant of the Kafka door (repeatable): its request topic, and with --secure its own "
            "Kafka user tenant-NAME, which may submit as that tenant only.",
        ),
    ] = None,
) -> None:
    """Start Kafka and PostgreSQL (reusing running ones) and create all topics."""
    try:
        tenant_names = [checked_tenant(tenant) for tenant in tenants or ()]
    except ValueError as exc:
        typer.echo(f"aoetl dev up: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        stack = DevStack.from_env(secure=secure, brokers=brokers)
        with _console.status("starting the dev stack..."):
            stack.up(timeout, tenants=tenant_names)
            if services:
                stack.start_services(SERVICE_NAMES, replicas, timeout)
    except ConfigurationError as exc:  # a choice that cannot work (e.g. --secure with an external broker)
        typer.echo(f"aoetl dev up: {exc}", err=True)
        raise typer.Exit(2) from exc
    endpoints = stack.endpoints.env()
    for key, value in endpoints.items():
        if os.environ.get(key) == value:
            # Given by the caller (an external server): not repeated, as a DSN may hold a password.
            _console.print(f"# {key} is already set in your environment")
        else:
            _console.print(f"export {key}={value}")
    if stack.secure:
        # plain print: rich would wrap long lines, and these are meant for `eval`
        for key, value in stack.cli_env().items():
            if key not in endpoints:
                print(f"export {key}={shlex.quote(value)}")
        print(f'export AOETL_KAFKA_SASL_PASSWORD="$(cat {shlex.quote(str(stack.cli_password_file))})"')
        for tenant in stack.tenants():
            password = shlex.quote(str(stack.tenant_password_file(tenant)))
            print(
                f"# as tenant {tenant}: export AOETL_KAFKA_SASL_USERNAME={tenant_user(tenant)}"
                f' AOETL_KAFKA_SASL_PASSWORD="$(cat {password})"'
            )
    # Comment lines, printed plainly (rich wraps long lines): `eval "$(aoetl dev up)"` runs the others.
    for process in stack.supervisor.alive():
        if process.api_url:
            print(f"# {process.name}[{process.replica}] API on {process.api_url}")
    print(f"# {_hand_admin_key_to_cli(stack)}")


def _hand_admin_key_to_cli(stack: DevStack) -> str:
    """Make sure the CLI's configuration holds an admin key of this stack; say so (never the key)."""
    try:
        held = read_config_file()
    except ConfigurationError:
        held = CliConfig()  # an unsafe file: replaced below, with mode 0600
    settings = load_settings(ServiceSettings, kafka=stack.kafka_settings)
    issued = ensure_local_admin(settings, held.token)
    path = config_path()
    if issued is None:
        return f"the CLI holds a local admin key of this stack ({path})"
    url = held.gateway_url or DEFAULT_GATEWAY_URL
    save_config(CliConfig(token=issued.token, tenant=LOCAL_TENANT, gateway_url=url), path)
    return f"a new local admin key ({issued.key_id}, tenant {LOCAL_TENANT}) is in the CLI's config {path}"


@app.command()
def down() -> None:
    """Stop services, Kafka and PostgreSQL started by `up` (external servers are left alone)."""
    DevStack.from_env().down()
    _console.print("dev stack stopped")


@app.command()
def status(output: OutputOption = OutputFormat.TABLE) -> None:
    """Show every component: healthy, address, pid. Exits 1 when something is unhealthy."""
    rows = DevStack.from_env().status()

    def table() -> Table:
        shown = Table(title="aoetl dev stack")
        for column in ("component", "healthy", "address", "pid"):
            shown.add_column(column, overflow="fold")
        for row in rows:
            healthy = "[green]yes[/green]" if row.healthy else "[red]no[/red]"
            pid = "external" if row.external else (str(row.pid) if row.pid else "-")
            shown.add_row(row.component, healthy, row.address, pid)
        return shown

    emit(output, [asdict(row) for row in rows], table, _console)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)
