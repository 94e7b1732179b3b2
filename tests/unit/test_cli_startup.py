"""Cold start of the ``aoetl`` command (``aoetl.cli``): the help of the CLI and of its commands imports none
of the heavy libraries the commands use when they run, and the registry's summaries are the commands' own.

What a help imports is read from ``sys.modules`` of a fresh interpreter that has shown it, so the test fails
the day a module-level import brings one of them back; it asserts no duration (``bench/bench_startup.py``
measures those).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aoetl.cli import COMMANDS, app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# What the commands bring when they run, and no help needs: the LLM stack, the data stack, the Kafka and
# Avro clients, HTTP, PostgreSQL, SQL parsing, and our own modules that import those (the contracts are
# the pydantic models of every schema).
HEAVY = (
    "langchain",
    "langchain_core",
    "langsmith",
    "pyarrow",
    "polars",
    "duckdb",
    "confluent_kafka",
    "aiokafka",
    "fastavro",
    "httpx",
    "psycopg",
    "sqlglot",
    "prometheus_client",
    "opentelemetry",
    "shared.contracts",
    "shared.spec",
    "shared.policy",
    "shared.agent",
    "shared.kafka",
    "shared.avro",
    "aoetl.client",
    "aoetl.devstack",
)
# Only the agent commands' bodies and the transforms bring these (never a command's signature).
MODEL_AND_DATA = ("langchain", "langchain_core", "langsmith", "pyarrow", "polars", "duckdb")
# What `aoetl submit` needs is the spec, the contracts, fastavro and confluent-kafka; never what only the
# services use: aiokafka (the asyncio clients), the task loop and its prometheus metrics, the avro library
# (a reader's evolution check), faust, HTTP, PostgreSQL, SQL parsing, the model and data stacks, and
# OpenTelemetry while tracing is off (shared.tracing.ingress).
NOT_FOR_SUBMIT = (
    "aiokafka",
    "opentelemetry",
    "prometheus_client",
    "shared.processing",
    "shared.metrics",
    "avro",
    "faust",
    "httpx",
    "psycopg",
    "sqlglot",
    *MODEL_AND_DATA,
)

SHOW_MODULES = """
import json, sys
from aoetl.cli import COMMANDS, app
{action}
print()  # the list on a line of its own, whatever was printed before
print(json.dumps(sorted(sys.modules)))
"""

# the command as the console script runs it, without its exit (aoetl.cli.Cli ends the process at once)
RUN_ARGV = """
import typer
sys.argv = ["aoetl", *{argv!r}]
try:
    typer.Typer.__call__(app)
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
"""


def fresh_interpreter(action: str, stdin: str = "", **env: str) -> tuple[str, set[str]]:
    """What a fresh interpreter prints (stdout and stderr) while it runs ``action`` (Python statements, after
    importing the CLI), and the modules it holds then."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", **env}
    done = subprocess.run(
        [sys.executable, "-c", SHOW_MODULES.format(action=action)],
        cwd=REPO,
        env={name: value for name, value in environment.items() if value},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shown, _, modules = done.stdout.rstrip().rpartition("\n")
    return shown + done.stderr, set(json.loads(modules))


def imported(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


# A real `aoetl submit` with only the broker calls replaced (the write, and the connect probe before it): the
# spec is loaded, the audit record and the request are built, validated and encoded as always, and the
# topics written to are printed.
SUBMIT_WITHOUT_BROKER = """
import aoetl.client
sent = []
aoetl.client.AoetlClient.check_reachable = lambda self, timeout=None: None
aoetl.client.produce_sync = lambda producer, topic, value, key=None, **_: sent.append(topic)
{run}
from shared.avro.catalog import SchemaCatalog
catalog = SchemaCatalog.default()
print("sent", json.dumps(sent))
fingerprinted = [name for name in catalog.names() if "fingerprint" in vars(catalog.entry(name))]
print("fingerprinted", json.dumps(fingerprinted))
"""

HELPS = [
    ["--help"],
    ["--version"],
    ["submit", "--help"],
    ["validate", "--help"],
    ["run", "--help"],
    ["schema", "--help"],
    ["schema", "show", "--help"],
]


@pytest.mark.parametrize("argv", HELPS)
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    shown, modules = fresh_interpreter(RUN_ARGV.format(argv=argv))
    assert shown.startswith("aoetl ") if argv == ["--version"] else "Usage:" in shown
    assert imported(modules, HEAVY) == []
    if argv in (["--help"], ["--version"]):  # the listing comes from the registry: no command module at all
        assert imported(modules, ("aoetl.commands",)) == []


def test_submit_imports_only_what_it_sends_with(tmp_path: Path) -> None:
    run = RUN_ARGV.format(argv=["submit", "examples/orders/pipeline.yaml"])
    shown, modules = fresh_interpreter(
        SUBMIT_WITHOUT_BROKER.format(run=run),
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",  # nothing listens there: nothing may be sent for real
        AOETL_CONFIG=str(tmp_path / "config.toml"),
        AOETL_TOPIC_SUFFIX="",
    )
    lines = dict(
        line.split(" ", 1) for line in shown.splitlines() if line.startswith(("sent ", "fingerprinted "))
    )
    assert json.loads(lines["sent"]) == ["aoetl.audit", "aoetl.requests"]  # the command did run through
    assert imported(modules, NOT_FOR_SUBMIT) == []
    # the catalog parses and fingerprints only the two schemas the command writes
    assert json.loads(lines["fingerprinted"]) == ["io.aoetl.AuditRecord", "io.aoetl.PipelineRequest"]


def test_no_command_signature_needs_the_model_or_data_libraries() -> None:
    # building a command is what its --help and its registration need: typer reads the signature
    _, modules = fresh_interpreter("for name, entry in COMMANDS.items():\n    entry.load(name)")
    assert imported(modules, MODEL_AND_DATA) == []


def test_plan_without_a_model_imports_no_langchain(tmp_path: Path) -> None:
    # a bare source path is answered by the deterministic suggestion: no model, so no LangChain
    (tmp_path / "orders.csv").write_text("id,amount\n1,2.5\n2,3.0\n")
    argv = ["plan", str(tmp_path / "orders.csv")]
    shown, modules = fresh_interpreter(RUN_ARGV.format(argv=argv), stdin="n\n", AOETL_LLM_MODEL="")
    assert "not submitted" in shown
    assert imported(modules, ("langchain", "langchain_core", "langsmith")) == []
    assert "shared.agent.planner" in modules  # the planner did answer


def test_each_summary_is_the_first_paragraph_of_the_commands_own_help() -> None:
    for name, entry in COMMANDS.items():
        command = entry.load(name)
        assert command.help is not None, name
        assert inspect.cleandoc(command.help).split("\n\n")[0] == entry.summary, name


def test_every_registered_command_is_listed_and_runs_through_its_module() -> None:
    from typer.testing import CliRunner

    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in listing.output, name
    # a command's own help is its loaded command's: its arguments are there
    shown = CliRunner().invoke(app, ["submit", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "pipeline spec, YAML or JSON" in shown.output


def test_the_default_tenant_written_out_for_validate_is_the_systems() -> None:
    from aoetl.commands import pipelines
    from shared.contracts import DEFAULT_TENANT

    assert pipelines.DEFAULT_TENANT == DEFAULT_TENANT
    assert inspect.signature(pipelines.validate).parameters["tenant"].default == DEFAULT_TENANT
