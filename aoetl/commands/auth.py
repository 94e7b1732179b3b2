"""``aoetl auth keys create|list|revoke``, ``aoetl auth whoami|login``: API keys and the CLI's own token.

``keys`` talks to Kafka directly by default (the Kafka door: the keys topic itself, audited there; this is
how the first key of a tenant is made), or with ``--gateway URL`` to a gateway's ``/auth/keys`` with the
configured token (an admin manages its own tenant's keys there). ``create`` prints the new key once, as
its last line of output; nothing else ever prints a key. ``login`` reads a token (hidden, or from stdin),
checks it against the gateway, and keeps it in the CLI's configuration file (mode 0600).
"""

from __future__ import annotations

import getpass
import re
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from aoetl.client import AoetlClient
from aoetl.commands.config import (
    DEFAULT_GATEWAY_URL,
    CliConfig,
    config_path,
    gateway_client,
    load_config,
    read_config_file,
    refusal_hint,
    save_config,
)
from aoetl.commands.door import EXIT_UNAVAILABLE, DoorAudit
from aoetl.failures import EXIT_AUTHENTICATION, gateway_exit_code
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit
from aoetl.transport import gateway_in_use
from shared.auth.keys import KeysUnreadable, issue_key, revoke
from shared.auth.keys import read_keys as read_key_records
from shared.auth.roles import TENANT_PATTERN
from shared.contracts import ApiKey, Role
from shared.errors import ConfigurationError
from shared.kafka.topics import Topics

app = typer.Typer(help="Authentication: API keys, and the token this CLI sends.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the gateway.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = CliConsole()
err_console = CliConsole(stderr=True)

EXIT_REFUSED = 1
EXIT_USAGE = 2

GatewayOption = Annotated[
    str | None,
    typer.Option(
        "--gateway", envvar="AOETL_GATEWAY_URL", help="use this gateway's REST API instead of Kafka"
    ),
]


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[red]{escape(message)}[/]")
    return typer.Exit(code)


def _answer(response: Any) -> Any:
    if response.status_code >= 300:
        detail = escape(response.text)
        code = gateway_exit_code(response.status_code, EXIT_REFUSED)
        raise _fail(f"{response.status_code} {detail}{refusal_hint(response.status_code)}", code)
    return response.json()


def read_keys(client: AoetlClient, timeout: float = 30.0) -> dict[str, ApiKey]:
    client.check_reachable()
    try:
        return read_key_records(
            client.settings.kafka, client.topic(Topics.API_KEYS), client.serde, timeout=timeout
        )
    except KeysUnreadable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from exc


def _print_new_key(key_id: str, tenant: str, role: str, token: str) -> None:
    # plain echo, not rich: a key must never be wrapped across lines
    typer.echo(f"API key {key_id} for tenant {tenant}, role {role}")
    typer.echo("It is shown this once and stored nowhere: keep it now (AOETL_TOKEN, or `aoetl auth login`).")
    typer.echo(token)


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant the key's principal belongs to")],
    role: Annotated[Role, typer.Option("--role", help="viewer, operator or admin")],
    description: Annotated[str | None, typer.Option(help="what the key is for")] = None,
    gateway: GatewayOption = None,
) -> None:
    """Create an API key and print it (its last line of output); only its hash is stored."""
    if not re.match(TENANT_PATTERN, tenant):
        raise _fail(f"tenant must match {TENANT_PATTERN}", EXIT_USAGE)
    gateway = gateway_in_use(gateway)
    if gateway:
        with gateway_client(gateway) as http:
            body = {"tenant": tenant, "role": role.value, "description": description}
            new = _answer(http.post("/auth/keys", json=body))
        _print_new_key(new["key_id"], new["tenant"], new["role"], new["key"])
        return
    issued = issue_key(tenant, role, created_by=f"user:{getpass.getuser()}", description=description)
    client = AoetlClient()
    try:
        DoorAudit(client).allowed("keys.create", f"key/{issued.key_id}")
        client.publish(Topics.API_KEYS, issued.key_id, issued.record)
    finally:
        client.close()
    _print_new_key(issued.key_id, tenant, role.value, issued.token)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None,
    gateway: GatewayOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The keys (never their secrets): id, tenant, role, state, creation."""
    gateway = gateway_in_use(gateway)
    if gateway:
        with gateway_client(gateway) as http:
            rows = [
                ApiKey.model_validate({**k, "secret_sha256": "-"}) for k in _answer(http.get("/auth/keys"))
            ]
    else:
        client = AoetlClient()
        try:
            rows = list(read_keys(client).values())
        finally:
            client.close()
    keys = [
        key
        for key in sorted(rows, key=lambda k: (k.tenant, k.created_at))
        if tenant is None or key.tenant == tenant
    ]

    def table() -> Table:
        shown = Table()
        shown.add_column("key id", no_wrap=True, min_width=16)  # ids are what revoke takes: never cut
        for column in ("tenant", "role", "state", "created", "by", "description"):
            shown.add_column(column, overflow="fold")
        for key in keys:
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "valid"
            shown.add_row(
                key.key_id,
                key.tenant,
                key.role.value,
                state,
                key.created_at.isoformat(timespec="seconds"),
                escape(key.created_by),
                escape(key.description or ""),
            )
        return shown

    # never the secret's hash either: a listing is for people, and the hash is the key's only stored form
    emit(output, [key.model_dump(mode="json", exclude={"secret_sha256"}) for key in keys], table, console)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key id (as `list` shows it)")],
    gateway: GatewayOption = None,
) -> None:
    """Revoke a key: every gateway replica refuses it within AOETL_AUTH_KEYS_MAX_STALENESS_S."""
    gateway = gateway_in_use(gateway)
    if gateway:
        with gateway_client(gateway) as http:
            _answer(http.delete(f"/auth/keys/{key_id}"))
        console.print(f"revoked {key_id}")
        return
    client = AoetlClient()
    try:
        record = read_keys(client).get(key_id)
        if record is None:
            raise _fail(f"no API key {key_id!r}", EXIT_REFUSED)
        if record.revoked:
            console.print(f"{key_id} was already revoked")
            return
        DoorAudit(client).allowed("keys.revoke", f"key/{key_id}")
        client.publish(Topics.API_KEYS, key_id, revoke(record, by=f"user:{getpass.getuser()}"))
    finally:
        client.close()
    console.print(f"revoked {key_id}")


def _gateway_url(option: str | None, config: CliConfig) -> str:
    return option or config.gateway_url or DEFAULT_GATEWAY_URL


@app.command()
def whoami(gateway: GatewayOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Who the configured token speaks for, as the gateway sees it."""
    config = load_config()
    if not config.token:
        raise _fail("no token configured: set AOETL_TOKEN, or run `aoetl auth login`", EXIT_AUTHENTICATION)
    with gateway_client(_gateway_url(gateway, config), config) as http:
        me = _answer(http.get("/auth/whoami"))
    if output is not OutputFormat.TABLE:
        emit(output, me)
        return
    console.print(f"{me['subject']} in tenant {me['tenant']}, role {me['role']} ({me['method']})")


@app.command()
def login(gateway: GatewayOption = None) -> None:
    """Read a token (hidden prompt, or stdin), check it against the gateway, keep it in the CLI's config."""
    token = (typer.prompt("token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()).strip()
    if not token:
        raise _fail("no token given", EXIT_USAGE)
    try:
        stored = read_config_file()
    except ConfigurationError:
        stored = CliConfig()  # an unsafe file is replaced, with mode 0600
    url = _gateway_url(gateway, stored)
    with gateway_client(url, CliConfig(token=token)) as http:
        me = _answer(http.get("/auth/whoami"))
    path = save_config(CliConfig(token=token, tenant=me["tenant"], gateway_url=url), config_path())
    console.print(
        f"logged in as {me['subject']} (tenant {me['tenant']}, role {me['role']}); token kept in {path}"
    )
