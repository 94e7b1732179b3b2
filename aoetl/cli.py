"""The ``aoetl`` command. A thin registry: each sub-command (group) lives in ``aoetl/commands/<name>.py`` and
is registered here with one entry of ``COMMANDS``.

Cold start: a command's module is imported only when that command runs or shows its own help. Importing
them all to build the CLI cost ``aoetl --help`` seconds (LangChain through the agent planner, Arrow,
Polars, DuckDB, the Kafka client, every schema's model), none of which a listing of commands needs. So the
registry holds, per command, where it lives and the line ``aoetl --help`` shows for it
(``tests/unit/test_cli_startup.py`` keeps that line equal to the command's own help, and checks what a
listing imports). A command module in turn imports its heavy dependencies inside the commands that use
them, so that ``aoetl submit --help`` imports no more than the submit command's signature needs.

Exit: the console script ends without tearing the interpreter down (``Cli.__call__``). Once a command has
returned, its output is written and its Kafka producer flushed; what remained was Python freeing every
module and object one by one, and librdkafka joining its threads: 0.1-0.3 s after the last line of every
``aoetl run`` (measured in bench/bench_peers.py), a tenth of a 1M-row load's wall time. The ``atexit``
handlers still run (logging, tracing exporters, ``weakref.finalize``) and the standard streams are flushed;
the process then exits with the command's code. When a thread that is not a daemon is still running, the
normal exit (which waits for it) is kept. In-process callers (``CliRunner``, the tests) never go through
``__call__`` and are not affected.

Failures: whatever exception a command lets escape, ``RootGroup.invoke`` hands it to ``aoetl.failures``,
which prints one line naming the fix and gives the exit code of its kind (the table is in the epilog of
``aoetl --help`` and in the README); ``--debug`` or ``AOETL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from aoetl.failures import EXIT_CODES

if TYPE_CHECKING:  # typer vendors click as typer._click: its classes are named here for the type checker only
    from typer._click import Command, Context


@dataclass(frozen=True)
class Entry:
    """A command of the root: ``target`` is ``"module:attribute"``, a ``typer.Typer`` (a group of commands)
    or a command function; ``summary`` is what ``aoetl --help`` shows for it."""

    target: str
    summary: str

    def load(self, name: str) -> Command:
        module, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if isinstance(found, typer.Typer):
            command: Command = typer.main.get_group(found)
        else:
            single = typer.Typer(add_completion=False)
            single.command(name=name)(found)
            command = typer.main.get_command(single)
        command.name = name
        return command


# In the order ``aoetl --help`` lists them; a summary is the first paragraph of the command's help, line
# breaks included (typer's rich help keeps them).
COMMANDS: dict[str, Entry] = {
    "validate": Entry(
        "aoetl.commands.pipelines:validate",
        "Check a spec and the spec policy of this environment (the AOETL_POLICY_* variables the services\n"
        "read: data roots, declared connections, egress allow list...); print every problem as field path +\n"
        "reason; exit non-zero when invalid. The orchestrator checks again with its own settings when the "
        "spec\n"
        "is submitted.",
    ),
    "submit": Entry("aoetl.commands.pipelines:submit", "Publish a pipeline request; print the run id."),
    "run": Entry(
        "aoetl.commands.pipelines:run",
        "Submit a pipeline and follow it: a progress bar per stage, a summary table, exit code by status.",
    ),
    "status": Entry(
        "aoetl.commands.pipelines:status",
        "A run's result, or its progress so far, read from Kafka; a run whose events are past their "
        "retention\nfrom its run history summary.",
    ),
    "runs": Entry(
        "aoetl.commands.runs:app", "The run history: one summary per run, kept beyond the events' retention."
    ),
    "stop": Entry(
        "aoetl.commands.pipelines:stop",
        "Stop a run. A continuous run's readers commit what they read and leave its topic (submit the\n"
        "pipeline again to resume exactly there); a one-shot run still in progress is aborted. Ends "
        "CANCELLED.",
    ),
    "results": Entry("aoetl.commands.pipelines:results", "Print pipeline results (JSON lines with --json)."),
    "alerts": Entry("aoetl.commands.pipelines:alerts", "Print alerts (JSON lines with --json)."),
    "profile": Entry(
        "aoetl.commands.agent:profile",
        "Profile a sample of a source (a file, glob, s3:// object or source spec): types, nulls, keys, PII,\n"
        "ranges.",
    ),
    "suggest": Entry(
        "aoetl.commands.agent:suggest",
        "Suggest a ready pipeline spec for a source, proven by a dry run on the sample.",
    ),
    "plan": Entry(
        "aoetl.commands.agent:plan",
        "Plan a pipeline from a sentence (needs AOETL_LLM_MODEL unless it is just a path), then submit it.",
    ),
    "dev": Entry(
        "aoetl.commands.dev:app", "Run the local Kafka + PostgreSQL stack (and optionally the services)."
    ),
    "definitions": Entry("aoetl.commands.definitions:app", "Register, list and delete pipeline definitions."),
    "webhook": Entry("aoetl.commands.webhooks:app", "Webhook tools."),
    "dlq": Entry("aoetl.commands.dlq:app", "Inspect and re-drive dead letters."),
    "schema": Entry(
        "aoetl.commands.schema:app",
        "The Avro records of the wire contracts and their versions; the spec's JSON Schema.",
    ),
    "auth": Entry("aoetl.commands.auth:app", "Authentication: API keys, and the token this CLI sends."),
    "context": Entry(
        "aoetl.commands.context:app",
        "Named contexts of the config file: which broker, gateway and token a command uses.",
    ),
}


class LazyCommand(TyperCommand):
    """Stands for a registered command in the root's listing (name and summary, nothing imported); the real
    command is built the first time it is used: click makes every command's context through
    ``make_context``, for running it, for its ``--help`` and for shell completion alike."""

    def __init__(self, name: str, entry: Entry) -> None:
        super().__init__(name, help=entry.summary)
        self.entry = entry
        self._loaded: Command | None = None

    def loaded(self) -> Command:
        if self._loaded is None:
            self._loaded = self.entry.load(self.name or "")
        return self._loaded

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        return self.loaded().make_context(info_name, args, parent=parent, **extra)


# click's own exceptions carry their exit code and message already (usage errors, typer.Exit, Ctrl-C)
_CLICK_EXITS = (typer.Exit, typer.Abort, TyperException)


class RootGroup(TyperGroup):
    """The root group: every entry of ``COMMANDS``, as a ``LazyCommand``; the one place where a failure
    becomes a line and an exit code (``aoetl.failures``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, entry in COMMANDS.items():
            self.add_command(LazyCommand(name, entry))

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_EXITS:
            raise
        except Exception as exc:
            if debugging(ctx):
                raise
            from aoetl.failures import report

            raise typer.Exit(report(exc)) from exc


def debugging(ctx: Context | None = None) -> bool:
    """``--debug`` was given (to this invocation), or ``AOETL_DEBUG`` is set to anything but 0."""
    if ctx is not None and ctx.meta.get("aoetl.debug"):
        return True
    return os.environ.get("AOETL_DEBUG", "0") not in ("", "0")


def _exit_code_table() -> str:
    # typer's rich help keeps these line breaks in an epilog
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    return f"Exit codes:\n\n{rows}"


class Cli(typer.Typer):
    """The ``aoetl`` console script (``aoetl.cli:app``): the command, then an exit without teardown (see
    the module docstring)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as ended:
            code = 0 if ended.code is None else ended.code
            if not isinstance(code, int) or not _only_daemon_threads_left():
                raise  # a message to print, or a thread to wait for: the interpreter's own exit
            exit_now(code)


def _only_daemon_threads_left() -> bool:
    current = threading.current_thread()
    return all(t is current or t.daemon for t in threading.enumerate())


def exit_now(code: int) -> None:
    """End the process with ``code`` after the ``atexit`` handlers and a flush of the standard streams,
    skipping the interpreter's teardown."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more can be said anyway
            stream.flush()
    os._exit(code)


app = Cli(
    name="aoetl",
    help="Agent-Orchestrated ETL.",
    epilog=_exit_code_table(),
    no_args_is_help=True,
    cls=RootGroup,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aoetl")
    except PackageNotFoundError:  # a source checkout run without installing the package
        return "unknown (not installed)"


def _print_version(shown: bool) -> None:
    if shown:
        typer.echo(f"aoetl {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version of aoetl and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and client logs (also AOETL_DEBUG=1).")
    ] = False,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="Use this named context of the config file (also AOETL_CONTEXT; `aoetl context list`).",
        ),
    ] = None,
) -> None:
    # the callback also makes typer build the root as a group (RootGroup)
    ctx.meta["aoetl.debug"] = debug or debugging()
    from aoetl.contexts import enter  # standard library only (cold start)

    # a bad config file or an unknown context is a failure of the command: one line, exit 10
    try:
        command = ctx.invoked_subcommand
        ctx.call_on_close(enter(context, ignored=command == "dev", apply=command != "context"))
    except Exception as exc:
        if ctx.meta["aoetl.debug"]:
            raise
        from aoetl.failures import report

        raise typer.Exit(report(exc)) from exc
    if ctx.meta["aoetl.debug"]:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        # librdkafka's reconnect chatter ("Connect to ... failed", "1/1 brokers are down", one line per
        # retry) would bury the one line of aoetl.failures: a handler that drops it keeps Python's
        # last-resort handler from printing it; it still propagates to any handler configured above
        kafka_log = logging.getLogger("aoetl.kafka")
        if not any(isinstance(handler, logging.NullHandler) for handler in kafka_log.handlers):
            kafka_log.addHandler(logging.NullHandler())


if __name__ == "__main__":
    app()
