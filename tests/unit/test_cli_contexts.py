"""Named contexts of the CLI's config file (``aoetl.contexts``): chosen by ``--context``, ``AOETL_CONTEXT``
or ``aoetl context use``; they fill the variables the environment leaves unset, for the command only; the
token never printed, the file kept private and its other tables kept."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aoetl.cli import app
from aoetl.commands.config import CliConfig, load_config, save_config
from aoetl.contexts import enter, write_config_data
from aoetl.devstack.osproc import free_port
from aoetl.failures import EXIT_CONFIGURATION, EXIT_KAFKA_UNAVAILABLE

pytestmark = pytest.mark.unit

SECRET = "aoetl_context-token-never-printed"
KAFKA_VARIABLES = ("AOETL_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "AOETL_TOPIC_SUFFIX")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg" / "config.toml"
    monkeypatch.setenv("AOETL_CONFIG", str(path))
    for name in (*KAFKA_VARIABLES, "AOETL_TOKEN", "AOETL_GATEWAY_URL", "AOETL_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    write_config_data(
        {
            "gateway": {"url": "http://127.0.0.1:8000", "token": "aoetl_default", "tenant": "local"},
            "contexts": {
                "staging": {
                    "bootstrap_servers": f"127.0.0.1:{free_port()}",
                    "topic_suffix": ".staging",
                    "gateway_url": "https://staging.example.com",
                    "token": SECRET,
                    "tenant": "acme",
                },
                "other": {"bootstrap_servers": "other:9092"},
            },
        },
        path,
    )
    return path


def _data(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_list_show_and_use_never_print_the_token_and_keep_the_file(config: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["context", "list", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"staging", "other"} and not any(row["current"] for row in rows.values())
    assert rows["staging"]["token"] == "(set)" and SECRET not in listed.output

    used = runner.invoke(app, ["context", "use", "staging"])
    assert used.exit_code == 0 and "using context staging" in used.output
    assert _data(config)["current_context"] == "staging"
    assert _data(config)["gateway"]["token"] == "aoetl_default"  # the rest of the file is kept
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    table = runner.invoke(app, ["context", "list"], env={"COLUMNS": "200"})
    assert "* " in next(line for line in table.output.splitlines() if "staging" in line), table.output

    shown = runner.invoke(app, ["context", "show", "-o", "json"], env={"AOETL_TOPIC_SUFFIX": ".mine"})
    document = json.loads(shown.stdout)
    assert document["name"] == "staging" and document["token"] == "(set)" and SECRET not in shown.output
    assert document["overridden_by"] == {"topic_suffix": "AOETL_TOPIC_SUFFIX"}

    unknown = runner.invoke(app, ["context", "use", "nope"])
    assert unknown.exit_code == 2 and "no context named 'nope'" in unknown.output
    assert runner.invoke(app, ["context", "use", "--none"]).exit_code == 0
    assert "current_context" not in _data(config)


def test_a_context_fills_what_the_environment_leaves_unset_for_the_command_only(config: Path) -> None:
    staging = _data(config)["contexts"]["staging"]["bootstrap_servers"]
    runner = CliRunner()
    # nothing listens there: the one-line error names the broker the command used
    used = runner.invoke(app, ["--context", "staging", "status", "some-run"])
    assert used.exit_code == EXIT_KAFKA_UNAVAILABLE, used.output
    assert f"cannot reach Kafka at {staging}" in used.output
    assert not any(os.environ.get(name) for name in KAFKA_VARIABLES)  # undone when the command ended

    elsewhere = f"127.0.0.1:{free_port()}"
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "AOETL_KAFKA_BOOTSTRAP_SERVERS"):  # the alias wins too
        overridden = runner.invoke(app, ["--context", "staging", "status", "x"], env={variable: elsewhere})
        assert f"cannot reach Kafka at {elsewhere}" in overridden.output, overridden.output

    by_variable = runner.invoke(app, ["status", "x"], env={"AOETL_CONTEXT": "staging"})
    assert f"cannot reach Kafka at {staging}" in by_variable.output

    missing = runner.invoke(app, ["--context", "nope", "status", "x"])
    assert missing.exit_code == EXIT_CONFIGURATION and "no context named 'nope'" in missing.output
    assert "staging" in missing.output and "Traceback" not in missing.output
    # the dev stack is local: a context never reaches it (nor fails it)
    dev = runner.invoke(
        app, ["--context", "nope", "dev", "status", "-o", "json"], env={"AOETL_STATE_DIR": str(config.parent)}
    )
    assert dev.exit_code == 1 and json.loads(dev.stdout), dev.output


def test_the_gateway_fields_of_a_context_come_over_the_gateway_table_and_under_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_config() == CliConfig(
        token="aoetl_default", tenant="local", gateway_url="http://127.0.0.1:8000"
    )
    leave = enter("staging")
    try:
        assert load_config() == CliConfig(
            token=SECRET, tenant="acme", gateway_url="https://staging.example.com"
        )
        assert "AOETL_TOKEN" not in os.environ  # the token is never put where child processes inherit it
        monkeypatch.setenv("AOETL_TOKEN", "from-env")
        assert load_config().token == "from-env"
        # `auth login` / `dev up` rewrite the [gateway] table only
        save_config(CliConfig(token="aoetl_new", tenant="local", gateway_url="http://127.0.0.1:8000"))
        assert set(_data(config)["contexts"]) == {"staging", "other"}
    finally:
        leave()
    assert os.environ.get("AOETL_TOPIC_SUFFIX") is None


def test_a_malformed_context_is_a_configuration_error(config: Path) -> None:
    write_config_data({"current_context": "bad", "contexts": {"bad": {"brokers": "x:9092"}}}, config)
    shown = CliRunner().invoke(app, ["status", "x"])
    assert shown.exit_code == EXIT_CONFIGURATION, shown.output
    assert "unknown field(s) brokers" in shown.output
    # `context use` can still repair it
    write_config_data({"current_context": "gone", "contexts": {"ok": {}}}, config)
    assert CliRunner().invoke(app, ["context", "use", "ok"]).exit_code == 0


def test_a_context_named_in_a_file_others_may_read_is_refused(config: Path) -> None:
    config.chmod(0o644)
    refused = CliRunner().invoke(app, ["--context", "staging", "status", "x"])
    assert refused.exit_code == EXIT_CONFIGURATION and "can be read by other users" in refused.output
    assert SECRET not in refused.output


def test_a_context_with_via_gateway_chooses_the_rest_strategy(config: Path) -> None:
    from aoetl.kafka_transport import KafkaTransport
    from aoetl.rest_transport import RestTransport
    from aoetl.transport import gateway_in_use, open_transport

    data = _data(config)
    data["contexts"]["remote"] = {
        "gateway_url": "https://remote.example.com",
        "token": SECRET,
        "via": "gateway",
    }
    write_config_data(data, config)
    leave = enter("remote")
    try:
        assert gateway_in_use(None) == "https://remote.example.com"
        assert gateway_in_use("http://flag.example.com") == "http://flag.example.com"  # the flag wins
        transport = open_transport()
        assert (
            isinstance(transport, RestTransport)
            and transport.where == "the gateway at https://remote.example.com"
        )
        transport.close()
    finally:
        leave()
    leave = enter("staging")  # no via: Kafka
    try:
        assert gateway_in_use(None) is None
        assert KafkaTransport.where == "Kafka"
    finally:
        leave()
    data["contexts"]["bad"] = {"via": "carrier-pigeon"}
    write_config_data(data, config)
    refused = CliRunner().invoke(app, ["--context", "bad", "status", "r1"])
    assert refused.exit_code == EXIT_CONFIGURATION and "via must be one of kafka, gateway" in refused.output
