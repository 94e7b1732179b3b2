"""``aoetl runs list``: the run history, one summary per run, newest first.

It reads the compacted runs topic (``Topics.RUNS``, one ``RunSummary`` per run id, written by the monitor:
``services.monitor.history``) to its end, and keeps the latest record of each key: a run's records share a
partition (key run id), so the latest in log order is the latest written, and compaction only removes the
older ones; a summary without a final status never replaces a finished run's. It never reads the event
history, which is bounded by retention and holds every batch of every run. ``aoetl status`` falls back on
the same summary (``find_summary``, ``print_summary``) for a run whose events and result are past their
retention.

Who sees what is the broker's decision (``shared.kafka.acls``): the operator's ``cli`` user reads the runs
topic; a tenant's own Kafka user reads nothing, and the reader says so in one line (``aoetl.failures``).

Cold start (see ``aoetl.cli``): the client, the contracts and rich's table are imported by the commands
that use them, not at the top.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aoetl.commands.pipelines import GatewayOpt
from aoetl.output import CliConsole, OutputFormat, OutputOption, emit

if TYPE_CHECKING:
    from rich.table import Table

    from aoetl.client import AoetlClient
    from shared.contracts import RunSummary

app = typer.Typer(
    help="The run history: one summary per run, kept beyond the events' retention.", no_args_is_help=True
)
console = CliConsole()

RUNNING = "RUNNING"  # what a summary without a final status is listed as
STATUSES = (RUNNING, "COMPLETED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELLED")  # RunStatus, and running
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an age (``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601 date or time (UTC unless it
    names its zone)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an age (30m, 12h, 7d, 2w) nor an ISO 8601 time (2026-01-31T08:00)",
            param_hint="--since",
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def status_of(summary: RunSummary) -> str:
    return summary.status.value if summary.status is not None else RUNNING


def latest_summaries(client: AoetlClient) -> dict[str, RunSummary]:
    """Every run's latest summary, read from the runs topic to its end."""
    from shared.contracts import RunSummary
    from shared.kafka.topics import Topics

    latest: dict[str, RunSummary] = {}
    with client.reader(Topics.RUNS, from_beginning=True) as reader:
        for _, value in reader.drain({Topics.RUNS: RunSummary}):
            if not isinstance(value, RunSummary):
                continue
            known = latest.get(value.run_id)
            # log order within the key's partition: the later wins, except over a finished run's summary,
            # which is final (a replica that lost the partition may still write an older one, see
            # services.monitor.history)
            if known is None or not known.finished or value.finished:
                latest[value.run_id] = value
    return latest


def find_summary(client: AoetlClient, run_id: str) -> RunSummary | None:
    return latest_summaries(client).get(run_id)


def select(
    summaries: Iterable[RunSummary],
    *,
    pipeline: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[RunSummary]:
    """The runs a listing shows: filtered, newest first (by submission), at most ``limit``."""
    chosen = [
        s
        for s in summaries
        if (pipeline is None or s.pipeline == pipeline)
        and (status is None or status_of(s) == status)
        and (since is None or s.newest_first_key >= since)
    ]
    chosen.sort(key=lambda s: (s.newest_first_key, s.run_id), reverse=True)
    return chosen if limit is None else chosen[:limit]


def _checked_status(value: str | None) -> str | None:
    if value is None:
        return None
    if value.upper() not in STATUSES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(STATUSES)}", param_hint="--status")
    return value.upper()


@app.command("list")
def list_runs(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline")] = None,
    status: Annotated[
        str | None, typer.Option("--status", "-s", help=f"only runs in this state: {', '.join(STATUSES)}")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only runs submitted since: an age (30m, 12h, 7d) or an ISO time")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="at most this many runs")] = 50,
    output: OutputOption = OutputFormat.TABLE,
    gateway: GatewayOpt = None,
) -> None:
    """Runs, newest first, from the run history (not the event history): status, times, row counts.

    Through the gateway (``GET /runs``): the recent runs it keeps of the caller's tenant, same shape."""
    from aoetl.transport import open_transport

    wanted = _checked_status(status)
    after = parse_since(since, datetime.now(UTC)) if since is not None else None
    transport = open_transport(gateway)  # Kafka, or the gateway's REST API (aoetl.transport)
    try:
        # --since is applied here, on every run of the other filters (neither side filters by time)
        found = transport.runs(pipeline, wanted, limit if after is None else None)
    finally:
        transport.close()
    runs = select(found, since=after, limit=limit)
    emit(output, [summary.model_dump(mode="json") for summary in runs], lambda: runs_table(runs), console)
    if output is OutputFormat.TABLE:
        console.print(f"{len(runs)} run(s)")


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at is not None else ""


def _took(summary: RunSummary) -> str:
    if summary.finished_at is None or summary.submitted_at is None:
        return ""
    return f"{(summary.finished_at - summary.submitted_at).total_seconds():.1f}s"


def _bytes(size: int | None) -> str:
    return "" if size is None else f"{size:,}"  # None: a sink that cannot say, or a v1 summary


def _error_line(summary: RunSummary, width: int = 60) -> str:
    error = summary.error
    return "" if error is None else f"{error.error_class}: {error.message[:width]}"


def runs_table(runs: list[RunSummary]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "run", "pipeline", "tenant", "status", "submitted", "took", "extracted", "loaded", "rejected"
    )
    table.add_column("error")
    for s in runs:
        table.add_row(
            s.run_id,
            escape(s.pipeline or ""),
            escape(s.tenant),
            status_of(s),
            _when(s.submitted_at),
            _took(s),
            f"{s.rows_extracted:,}",
            f"{s.rows_loaded:,}",
            f"{s.rows_rejected:,}",
            escape(_error_line(s)),
        )
    return table


def summary_of_view(view: dict[str, Any]) -> RunSummary:
    """A run as the gateway's ``GET /runs`` answers it (``services.gateway.state.RunStatusView``), as the
    run history's summary: the same figures, from its folded stages and its result once it has one."""
    from shared.contracts import DEFAULT_TENANT, ErrorInfo, PipelineResult, RunStatus, RunSummary

    stages = view.get("stages") or {}
    result = PipelineResult.model_validate(view["result"]) if view.get("result") else None

    def out(stage: str) -> int:
        return int((stages.get(stage) or {}).get("rows_out", 0))

    def rejected(stage: str) -> int:
        return int((stages.get(stage) or {}).get("rows_rejected", 0))

    failed_rules = [q for q in result.quality if q.rows_failed > 0] if result is not None else []
    errors: list[ErrorInfo] = result.errors if result is not None else []
    return RunSummary(
        run_id=view["run_id"],
        pipeline=view.get("pipeline"),
        tenant=view.get("tenant") or DEFAULT_TENANT,
        status=RunStatus(view["status"]) if view["status"] in set(RunStatus) else None,
        submitted_at=view.get("submitted_at"),
        started_at=result.started_at if result is not None else None,
        finished_at=result.finished_at if result is not None else None,
        rows_extracted=out("extract"),
        rows_transformed=out("transform"),
        rows_loaded=out("load"),
        rows_rejected=rejected("transform") + rejected("load"),
        batches_loaded=int((stages.get("load") or {}).get("batches", 0)),
        bytes_loaded=view.get("bytes_loaded"),
        rules_violated=len(failed_rules),
        rows_failed_quality=sum(q.rows_failed for q in failed_rules),
        error=errors[-1] if errors else None,
        as_of=view.get("last_event_at") or view.get("submitted_at") or datetime.now(UTC),
    )


def summary_document(summary: RunSummary) -> dict[str, object]:
    """A summary as ``aoetl status -o json|yaml`` shows it: marked as one, with its fields."""
    return {"source": "run history summary", **summary.model_dump(mode="json")}


def print_summary(summary: RunSummary, out: CliConsole | None = None) -> None:
    """What ``aoetl status`` prints of a run known only from the run history."""
    from rich.markup import escape
    from rich.table import Table

    shown = out or console
    colour = "green" if status_of(summary) in ("COMPLETED", RUNNING) else "red"
    took = _took(summary)
    shown.print(
        f"run [bold]{summary.run_id}[/] ({escape(summary.pipeline or '?')}): "
        f"[bold {colour}]{status_of(summary)}[/]{f' in {took}' if took else ''}"
    )
    shown.print(
        "  a summary from the run history: the run's events are past their retention, so only its totals "
        "are left"
    )
    figures = Table(
        "submitted", "started", "finished", "extracted", "transformed", "loaded", "bytes", "rejected"
    )
    figures.add_row(
        _when(summary.submitted_at),
        _when(summary.started_at),
        _when(summary.finished_at),
        f"{summary.rows_extracted:,}",
        f"{summary.rows_transformed:,}",
        f"{summary.rows_loaded:,}",
        _bytes(summary.bytes_loaded),
        f"{summary.rows_rejected:,}",
    )
    shown.print(figures)
    if summary.rules_violated:
        shown.print(
            f"  quality: {summary.rules_violated} rule(s) failed on {summary.rows_failed_quality:,} row(s)"
        )
    if summary.error is not None:
        shown.print(f"  [red]error[/] {escape(_error_line(summary, width=500))}")
