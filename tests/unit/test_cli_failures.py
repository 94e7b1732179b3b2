"""The CLI's failures (``aoetl.failures``, caught in ``aoetl.cli``): one line on stderr naming the fix, the
exit code of its kind, no traceback unless asked, no secret; ``--version``; full width when piped.

Unreachable servers are real refused connections: a loopback port bound by the test and never listened on,
so connecting to it is refused at once by the kernel (no broker, no gateway, no PostgreSQL needed).
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aoetl.cli import app
from aoetl.failures import (
    EXIT_AUTHENTICATION,
    EXIT_CODES,
    EXIT_CONFIGURATION,
    EXIT_GATEWAY_UNAVAILABLE,
    EXIT_INTERNAL,
    EXIT_KAFKA_UNAVAILABLE,
    EXIT_NOT_AUTHORIZED,
    EXIT_POSTGRES_UNAVAILABLE,
    EXIT_STACK_STARTUP,
    KafkaUnreachableError,
    classify,
    report,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "orders" / "pipeline.yaml"
# well within "a few seconds": a refused connection is known at once; librdkafka's own waits were 14-33 s
FAIL_FAST_S = 5.0


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nothing else takes it), never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path, closed_port: int) -> dict[str, str | None]:
    """The CLI pointed at a broker that refuses connections, with a config file of its own."""
    bootstrap = f"127.0.0.1:{closed_port}"
    return {
        "AOETL_CONFIG": str(tmp_path / "config.toml"),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AOETL_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AOETL_TOPIC_SUFFIX": "",
        "AOETL_DEBUG": None,
        "AOETL_TOKEN": None,
        "AOETL_GATEWAY_URL": None,
        "COLUMNS": None,
    }


def invoke(args: list[str], env: dict[str, str | None], **extra: str | None) -> tuple[Result, float]:
    started = time.monotonic()
    result = CliRunner().invoke(app, args, env={**env, **extra})
    return result, time.monotonic() - started


def one_line_error(result: Result) -> str:
    """The single line the CLI printed on stderr (asserting there was exactly one, and no traceback)."""
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aoetl: error: ")
    return lines[0]


# every command that reads or writes Kafka first, on a refused broker
KAFKA_COMMANDS = [
    ["status", "some-run"],
    ["submit", str(SPEC)],
    ["run", str(SPEC)],
    ["dlq", "list"],
    ["definitions", "list"],
    ["results"],
    ["auth", "keys", "list"],
]


@pytest.mark.parametrize("args", KAFKA_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_broker_is_one_line_and_its_own_exit_code_fast(
    args: list[str], env: dict[str, str | None], closed_port: int
) -> None:
    result, took = invoke(args, env)
    assert result.exit_code == EXIT_KAFKA_UNAVAILABLE, result.output
    line = one_line_error(result)
    assert f"cannot reach Kafka at 127.0.0.1:{closed_port}" in line and "Connection refused" in line
    assert "`aoetl dev up`" in line  # the fix
    assert took < FAIL_FAST_S, took
    assert result.stdout == ""  # nothing half-done was printed (submit: no run id)


def test_with_debug_the_exception_and_its_traceback_come_back(env: dict[str, str | None]) -> None:
    for args, extra in ((["--debug", "status", "r"], {}), (["status", "r"], {"AOETL_DEBUG": "1"})):
        result, _ = invoke(args, env, **extra)
        assert isinstance(result.exception, KafkaUnreachableError), result.output
        assert result.exit_code not in (0, EXIT_KAFKA_UNAVAILABLE)


def test_a_slow_broker_is_waited_for_a_bounded_time(env: dict[str, str | None]) -> None:
    # a listener that accepts and never answers: no "refused" to act on, only the connect timeout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        bootstrap = f"127.0.0.1:{silent.getsockname()[1]}"
        result, took = invoke(
            ["status", "r"],
            env,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            AOETL_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            AOETL_CONNECT_TIMEOUT_S="1.5",
        )
    assert result.exit_code == EXIT_KAFKA_UNAVAILABLE, result.output
    assert f"cannot reach Kafka at {bootstrap} (no answer within 1.5s)" in one_line_error(result)
    assert 1.5 <= took < 1.5 + FAIL_FAST_S


def test_an_unknown_broker_host_is_reported_at_once(env: dict[str, str | None]) -> None:
    result, took = invoke(
        ["status", "r"],
        env,
        KAFKA_BOOTSTRAP_SERVERS="no-such-broker.invalid:9092",
        AOETL_KAFKA_BOOTSTRAP_SERVERS="no-such-broker.invalid:9092",
    )
    assert result.exit_code == EXIT_KAFKA_UNAVAILABLE, result.output
    assert "no-such-broker.invalid" in one_line_error(result)
    assert took < FAIL_FAST_S


def test_a_tenants_kafka_user_reading_results_is_not_authorized(env: dict[str, str | None]) -> None:
    result, _ = invoke(
        ["status", "r"],
        env,
        AOETL_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        AOETL_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        AOETL_KAFKA_SASL_USERNAME="tenant-acme",
        AOETL_KAFKA_SASL_PASSWORD="tenant-password-123",
    )
    assert result.exit_code == EXIT_NOT_AUTHORIZED, result.output
    line = one_line_error(result)
    assert "not authorized to read topic 'aoetl.results'" in line
    assert "tenant-password-123" not in result.output


def test_sasl_credentials_refused_by_the_broker(env: dict[str, str | None]) -> None:
    from confluent_kafka import KafkaError

    from aoetl.client import AoetlClient
    from aoetl.failures import KafkaAuthenticationError
    from shared.settings import KafkaSettings, ServiceSettings

    kafka = KafkaSettings(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], client_id="t")
    client = AoetlClient(ServiceSettings(kafka=kafka))
    # what librdkafka's error callback reports when the broker refuses the SASL handshake
    client._note_connection_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    with pytest.raises(KafkaAuthenticationError) as refused:
        client.check_reachable(timeout=2)
    assert classify(refused.value)[0] == EXIT_AUTHENTICATION
    assert "AOETL_KAFKA_SASL_PASSWORD" in str(refused.value)


@pytest.mark.parametrize(
    "args",
    [
        ["definitions", "list", "--gateway"],
        ["auth", "whoami", "--gateway"],
        ["auth", "keys", "list", "--gateway"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_unreachable_gateway_is_one_line_and_its_own_exit_code(
    args: list[str], env: dict[str, str | None], closed_port: int
) -> None:
    url = f"http://operator:gateway-secret-99@127.0.0.1:{closed_port}"
    result, took = invoke([*args, url], env, AOETL_TOKEN="aoetl_token_that_must_not_show")
    assert result.exit_code == EXIT_GATEWAY_UNAVAILABLE, result.output
    line = one_line_error(result)
    assert f"cannot reach the gateway at http://operator:***@127.0.0.1:{closed_port}/" in line
    assert "--gateway URL or set AOETL_GATEWAY_URL" in line
    assert "gateway-secret-99" not in result.output and "aoetl_token_that_must_not_show" not in result.output
    assert took < FAIL_FAST_S


def test_an_unreachable_postgres_is_its_own_exit_code_and_never_shows_the_password(closed_port: int) -> None:
    import psycopg

    dsn = f"postgresql://etl:pg-secret-42@127.0.0.1:{closed_port}/aoetl"
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(dsn, connect_timeout=2)
    code, line = classify(refused.value)
    assert code == EXIT_POSTGRES_UNAVAILABLE
    assert "cannot reach PostgreSQL" in line and "`aoetl dev up`" in line


def test_report_prints_one_redacted_line(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.errors import ConfigurationError

    error = ConfigurationError("bad DSN postgresql://etl:pg-secret-42@db/aoetl\nsecond line")
    assert report(error) == EXIT_CONFIGURATION
    printed = capsys.readouterr().err
    assert printed.count("\n") == 1 and "pg-secret-42" not in printed and "second line" in printed


def test_a_log_tail_is_cut_to_its_first_line(capsys: pytest.CaptureFixture[str]) -> None:
    from aoetl.devstack.errors import StackStartupError

    tail = "\n".join(f"log line {n}" for n in range(40))
    assert report(StackStartupError(f"kafka did not start:\n{tail}")) == EXIT_STACK_STARTUP
    printed = capsys.readouterr().err
    assert printed.count("\n") == 1 and "kafka did not start" in printed and "40 more lines" in printed
    assert "log line 39" not in printed and "`aoetl dev status`" in printed


def test_a_configuration_error_is_one_line_and_exit_10(env: dict[str, str | None], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[gateway]\ntoken = "aoetl_x"\n')
    config.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)  # others may read: refused
    result, _ = invoke(["auth", "whoami"], env, AOETL_CONFIG=str(config))
    assert result.exit_code == EXIT_CONFIGURATION, result.output
    assert "can be read by other users" in one_line_error(result)
    bad_setting, _ = invoke(["status", "r"], env, AOETL_KAFKA_SECURITY_PROTOCOL="BOGUS")
    assert bad_setting.exit_code == EXIT_CONFIGURATION
    assert "AOETL_KAFKA_SECURITY_PROTOCOL" in one_line_error(bad_setting)
    bad_timeout, _ = invoke(["status", "r"], env, AOETL_CONNECT_TIMEOUT_S="soon")
    assert bad_timeout.exit_code == EXIT_CONFIGURATION
    assert "AOETL_CONNECT_TIMEOUT_S must be a number of seconds" in one_line_error(bad_timeout)


def test_an_unexpected_error_is_one_line_that_says_how_to_see_more(
    env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    import aoetl.client

    def broken(*_: object, **__: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(aoetl.client.AoetlClient, "__init__", broken)
    result, _ = invoke(["status", "r"], env)
    assert result.exit_code == EXIT_INTERNAL
    line = one_line_error(result)
    assert "ZeroDivisionError: a bug" in line and "--debug" in line


def test_usage_errors_and_run_codes_are_left_to_click_and_the_commands(env: dict[str, str | None]) -> None:
    assert invoke(["status"], env)[0].exit_code == 2  # a missing argument: click's usage error
    assert invoke(["validate", str(REPO / "no-such.yaml")], env)[0].exit_code == 2


def test_exit_codes_are_distinct_from_a_runs_and_listed_in_help_and_readme() -> None:
    from aoetl.commands.run_display import EXIT_CODES as RUN_EXIT_CODES

    failures = {
        EXIT_CONFIGURATION,
        EXIT_KAFKA_UNAVAILABLE,
        EXIT_POSTGRES_UNAVAILABLE,
        EXIT_GATEWAY_UNAVAILABLE,
        EXIT_AUTHENTICATION,
        EXIT_NOT_AUTHORIZED,
        EXIT_STACK_STARTUP,
        EXIT_INTERNAL,
    }
    assert len(failures) == 8 and not failures & set(RUN_EXIT_CODES.values())
    assert set(RUN_EXIT_CODES.values()) | failures <= set(EXIT_CODES)
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    readme = (REPO / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"{code:>3}  {meaning}" in shown.output, code
        assert f"| {code} | {meaning} |" in readme, code


def test_version_is_the_installed_packages() -> None:
    shown = CliRunner().invoke(app, ["--version"])
    assert shown.exit_code == 0
    assert shown.output == f"aoetl {importlib.metadata.version('aoetl')}\n"


def test_piped_output_is_not_cut_at_80_columns(env: dict[str, str | None], tmp_path: Path) -> None:
    deep = tmp_path / ("a-long-directory-name-" * 4) / "orders"
    deep.mkdir(parents=True)
    spec = deep / "pipeline.yaml"
    spec.write_text(SPEC.read_text())
    piped, _ = invoke(["validate", str(spec)], env)
    line = next(line for line in piped.output.splitlines() if "pipeline" in line)
    assert len(line) > 80 and str(spec) in line, piped.output  # the whole line, unwrapped
    narrow, _ = invoke(["validate", str(spec)], env, COLUMNS="60")  # COLUMNS still wins
    assert all(len(line) <= 60 for line in narrow.output.splitlines()), narrow.output


def test_a_cli_console_on_a_terminal_keeps_the_terminals_width(monkeypatch: pytest.MonkeyPatch) -> None:
    from aoetl.output import PIPED_WIDTH, CliConsole

    monkeypatch.delenv("COLUMNS", raising=False)
    with open(os.devnull, "w") as sink:
        assert CliConsole(file=sink).width == PIPED_WIDTH
    assert CliConsole(force_terminal=True, width=123).width == 123
