"""The CLI's side of authentication, against the real gateway app served by uvicorn on loopback over a
fake bus (no broker): the configuration file (mode 0600, refused when others can read it), the token sent
on every REST command and never to webhooks, ``auth keys`` and ``auth whoami|login`` through the gateway,
and no token ever printed but at creation."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from aoetl.cli import app as cli
from aoetl.commands.config import CliConfig, load_config, read_config_file, save_config
from aoetl.contexts import write_config_data
from aoetl.devstack.osproc import free_port
from aoetl.failures import EXIT_AUTHENTICATION, EXIT_NOT_AUTHORIZED
from services.gateway.app import create_app
from services.gateway.core import Gateway
from shared.contracts import PipelineDefinition
from shared.errors import ConfigurationError
from shared.spec import parse_spec
from tests.helpers import wait_until
from tests.unit.gateway_support import ADMIN, TENANT, VIEWER, FakeBus, make_gateway

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "name": "repo-sync",
    "source": {"type": "event", "records_path": "commits"},
    "destination": {"type": "jsonl", "path": "/tmp/out.jsonl"},
}


@pytest.fixture(autouse=True)
def private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg" / "config.toml"
    monkeypatch.setenv("AOETL_CONFIG", str(path))
    for name in ("AOETL_TOKEN", "AOETL_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def served() -> Iterator[tuple[str, Gateway, FakeBus]]:
    bus = FakeBus()
    gateway = make_gateway(bus)
    gateway.catalog.apply(
        "repo-sync", PipelineDefinition(name="repo-sync", spec=parse_spec(SPEC), tenant=TENANT)
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(gateway), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # uvicorn offers no event to wait on: poll its flag (or the thread's death) with a deadline
    wait_until(lambda: server.started or not thread.is_alive(), timeout=30, interval=0.01, message="the API")
    assert server.started, "the API never started"
    yield f"http://127.0.0.1:{port}", gateway, bus
    server.should_exit = True
    thread.join(10)


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, input=stdin)


# ---------------------------------------------------------------------------------------- the file
def test_the_config_file_is_private_and_the_environment_wins(private_config: Path, monkeypatch: Any) -> None:
    save_config(CliConfig(token="aoetl_x", tenant="acme", gateway_url="http://gw:8000"))
    assert stat.S_IMODE(private_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(private_config.parent.stat().st_mode) == 0o700
    assert read_config_file() == CliConfig(token="aoetl_x", tenant="acme", gateway_url="http://gw:8000")
    monkeypatch.setenv("AOETL_TOKEN", "from-env")
    assert load_config().token == "from-env" and load_config().tenant == "acme"
    os.chmod(private_config, 0o644)
    with pytest.raises(ConfigurationError, match="leaked"):
        read_config_file()
    private_config.write_text("not toml [")
    os.chmod(private_config, 0o600)
    with pytest.raises(ConfigurationError, match="TOML"):
        read_config_file()


# ------------------------------------------------------------------------------ token on REST commands
def test_rest_commands_send_the_configured_token(
    served: tuple[str, Gateway, FakeBus], tmp_path: Path
) -> None:
    url, gateway, _bus = served
    unauthenticated = run("definitions", "list", "--gateway", url)
    assert (
        unauthenticated.exit_code == EXIT_AUTHENTICATION
        and "401" in unauthenticated.output
        and "aoetl auth login" in unauthenticated.output
    )

    save_config(CliConfig(token=VIEWER.token))
    listed = run("definitions", "list", "--gateway", url)
    assert listed.exit_code == 0, listed.output and "repo-sync" in listed.output
    as_json = run("definitions", "list", "--gateway", url, "-o", "json")
    assert [d["name"] for d in json.loads(as_json.output)] == ["repo-sync"], as_json.output
    spec = tmp_path / "a.json"
    spec.write_text(json.dumps({**SPEC, "description": "v2"}))
    as_viewer = run("definitions", "apply", str(spec), "--gateway", url)
    assert as_viewer.exit_code == EXIT_NOT_AUTHORIZED and "403" in as_viewer.output
    applied = run("definitions", "apply", str(spec), "--gateway", url, env={"AOETL_TOKEN": ADMIN.token})
    assert applied.exit_code == 0, applied.output
    assert gateway.catalog.get("repo-sync").updated_by == f"key:{ADMIN.key_id}@acme"  # type: ignore[union-attr]
    for output in (listed.output, as_viewer.output, applied.output):
        assert VIEWER.token not in output and ADMIN.token not in output


def test_keys_through_the_gateway_and_the_new_key_is_the_last_line(
    served: tuple[str, Gateway, FakeBus],
) -> None:
    url, _gateway, bus = served
    admin = {"AOETL_TOKEN": ADMIN.token}
    created = run(
        "auth", "keys", "create", "--tenant", "acme", "--role", "operator", "--gateway", url, env=admin
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("aoetl_") and key not in str(bus.published)
    me = run("auth", "whoami", "--gateway", url, env={"AOETL_TOKEN": key})
    assert me.exit_code == 0 and "tenant acme, role operator" in me.output and key not in me.output
    key_id = key.split("_")[1]
    listed = run("auth", "keys", "list", "--gateway", url, env=admin)
    assert key_id in listed.output and key not in listed.output
    as_json = run("auth", "keys", "list", "--gateway", url, "-o", "json", env=admin)
    assert key_id in [row["key_id"] for row in json.loads(as_json.output)]
    assert key not in as_json.output and "secret_sha256" not in as_json.output
    elsewhere = run(
        "auth", "keys", "create", "--tenant", "globex", "--role", "admin", "--gateway", url, env=admin
    )
    assert elsewhere.exit_code == EXIT_NOT_AUTHORIZED and "403" in elsewhere.output
    bad = run(
        "auth", "keys", "create", "--tenant", "Bad Tenant", "--role", "admin", "--gateway", url, env=admin
    )
    assert bad.exit_code == 2
    revoked = run("auth", "keys", "revoke", key_id, "--gateway", url, env=admin)
    assert revoked.exit_code == 0, revoked.output
    assert run("auth", "whoami", "--gateway", url, env={"AOETL_TOKEN": key}).exit_code == EXIT_AUTHENTICATION


def test_login_checks_the_token_and_keeps_it_private(
    served: tuple[str, Gateway, FakeBus], private_config: Path
) -> None:
    url, _, _ = served
    wrong = run("auth", "login", "--gateway", url, stdin="aoetl_0123456789abcdef_" + "x" * 43 + "\n")
    assert wrong.exit_code == EXIT_AUTHENTICATION and not private_config.exists()
    logged = run("auth", "login", "--gateway", url, stdin=VIEWER.token + "\n")
    assert logged.exit_code == 0, logged.output
    assert VIEWER.token not in logged.output
    assert read_config_file() == CliConfig(token=VIEWER.token, tenant="acme", gateway_url=url)
    assert stat.S_IMODE(private_config.stat().st_mode) == 0o600
    assert run("auth", "whoami").exit_code == 0  # the stored url and token


def test_webhook_test_sends_no_token(private_config: Path, tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers))
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    save_config(CliConfig(token=ADMIN.token))
    payload = tmp_path / "push.json"
    payload.write_text("{}")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sent = run(
        "webhook",
        "test",
        "gh",
        "--payload",
        str(payload),
        "--url",
        url,
        "--secret",
        "s",
        "--scheme",
        "github",
    )
    thread.join(10)
    server.server_close()
    assert sent.exit_code == 0, sent.output
    [headers] = seen
    assert "Authorization" not in headers and "X-Hub-Signature-256" in headers


def test_keys_go_through_the_gateway_a_context_names_with_via(
    served: tuple[str, Gateway, FakeBus], private_config: Path
) -> None:
    # the broker of the context is unreachable: only the gateway can answer, as for every other command
    url, _gateway, _bus = served
    write_config_data(
        {
            "contexts": {
                "remote": {
                    "bootstrap_servers": f"127.0.0.1:{free_port()}",
                    "gateway_url": url,
                    "token": ADMIN.token,
                    "via": "gateway",
                }
            }
        },
        private_config,
    )
    created = run("--context", "remote", "auth", "keys", "create", "--tenant", "acme", "--role", "viewer")
    assert created.exit_code == 0, created.output
    key_id = created.output.strip().splitlines()[-1].split("_")[1]
    listed = run("--context", "remote", "auth", "keys", "list", "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert key_id in [row["key_id"] for row in json.loads(listed.output)]
    revoked = run("--context", "remote", "auth", "keys", "revoke", key_id)
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
