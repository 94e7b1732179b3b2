"""aoetl against its peers on one batch load: the same seeded N-row, 10-column CSV, the same transforms (cast
id/qty/amount/price/score, keep ``status <> 'cancelled'``, derive ``total = amount * qty``), into the same
dev-stack PostgreSQL, each tool as a whole process, in one run, round-robin (the order rotates each round),
median of ``--rounds``:

- ``psql``: one ``psql`` process: ``\\copy`` of the CSV into a temporary staging table of the CSV's
  shape, then ``INSERT INTO final SELECT ..., amount * qty FROM staging WHERE status <> 'cancelled'``: the
  transforms as SQL after the copy, into a table of the final shape;
- ``dlt-arrow``: dlt with pyarrow batches (cast/filter/derive in pyarrow) and its csv loader;
- ``dlt-dicts``: dlt's default path, the same rows as Python dicts through its default normalizer;
- ``aoetl``: ``aoetl run spec.yaml`` against the services already running (orchestrator, extract, transform,
  load); its wall time, and the run's own duration from its result.

The dlt peers run from their own venv (``.state/peers-venv``, made by ``make bench-peers`` or, when missing,
here, from bench/peers-requirements.txt), never the project's. After each load the row count and a checksum
computed in SQL (sum of id, of qty, of total as numeric, md5 of the ordered ids) must equal the psql one.
Writes bench/results/bench_peers.json: every round, the medians, CPU seconds of the tool's process (rusage of
the reaped process) and of PostgreSQL, the broker and each aoetl service (/proc deltas), the peak RSS of each
of those in that round (``bench/peak_rss.py``: the tool's process and the PostgreSQL client backends looked
at while they run, the services' and the broker's high-water mark reset when the round starts), machine info,
load average. Flat memory: a run 10x larger must peak at the same RSS per service (each consumer buffers at
most ``AOETL_CONSUMER_PREFETCH_KIB`` ahead).

    python bench/bench_peers.py --rows 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.peak_rss import PeakRss  # noqa: E402
from bench.peers_common import (  # noqa: E402
    cpu_snapshot,
    ensure_peers_venv,
    machine_info,
    peer_versions,
    restart_services,
    sql,
    timed,
)

TOOLS = ("psql", "dlt-arrow", "dlt-dicts", "aoetl")
BASELINES = ("psql", "dlt-arrow")
STATE = REPO / ".state" / "bench" / "peers"

STAGING_DDL = (
    "id bigint, customer text, status text, amount double precision, qty bigint, price double precision, "
    "region text, score double precision, flag text, note text"
)
FINAL_DDL = STAGING_DDL + ", total double precision"
CHECKSUM_SQL = (
    "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(qty), 0), coalesce(sum(total::numeric), 0), "
    "md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) FROM {table}"
)

COLUMNS_SQL = (
    "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
    "FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = '{table}'"
)

# ---- pure parts (tests/unit/test_bench_peers.py) ----


def psql_command(dsn: str, csv_path: Path, table: str) -> tuple[list[str], str]:
    """One psql process doing the copy and the transforms (its script on stdin), stopping at the first
    error: the argv and the script."""
    script = "\n".join(
        [
            f"CREATE TABLE {table} ({FINAL_DDL});",
            f"CREATE TEMP TABLE staging ({STAGING_DDL});",
            f"\\copy staging FROM {shlex.quote(str(csv_path))} WITH (FORMAT csv, HEADER true)",
            f"INSERT INTO {table} SELECT id, customer, status, amount, qty, price, region, score, flag, "
            "note, amount * qty FROM staging WHERE status <> 'cancelled';",
        ]
    )
    return ["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"], script + "\n"


def dlt_command(python: Path, mode: str, dsn: str, csv_path: Path, dataset: str, table: str) -> list[str]:
    return [
        str(python),
        str(REPO / "bench" / "peers_dlt.py"),
        "--mode",
        mode,
        "--csv",
        str(csv_path),
        "--dsn",
        dsn,
        "--dataset",
        dataset,
        "--table",
        table,
        "--pipelines-dir",
        str(STATE / "dlt-pipelines"),
    ]


def aoetl_command(python: str, spec_path: Path) -> list[str]:
    """The ``aoetl`` console script beside the interpreter, as a user runs it."""
    return [str(Path(python).parent / "aoetl"), "run", str(spec_path)]


def checksums_agree(reference: Sequence[object], others: dict[str, Sequence[object]]) -> list[str]:
    """The tools whose checksum differs from the reference one (empty: all agree)."""
    want = [str(v) for v in reference]
    return sorted(tool for tool, got in others.items() if [str(v) for v in got] != want)


def summarise(rounds: list[dict[str, dict]], key: str = "seconds") -> dict[str, dict[str, float | None]]:
    """Per tool: the median of ``key`` over the rounds, and its ratio against each baseline's median
    (baseline seconds / tool seconds: above 1 means faster than the baseline)."""
    medians = {
        tool: statistics.median(r[tool][key] for r in rounds if r.get(tool, {}).get(key) is not None)
        for tool in rounds[0]
        if any(r.get(tool, {}).get(key) is not None for r in rounds)
    }
    return {
        tool: {
            "median_s": round(seconds, 3),
            **{
                f"vs_{base}": round(medians[base] / seconds, 3) if base in medians else None
                for base in BASELINES
            },
        }
        for tool, seconds in medians.items()
    }


def rotated(tools: Sequence[str], round_index: int) -> list[str]:
    """Round-robin order: each tool goes first once every len(tools) rounds, so drift spreads evenly."""
    shift = round_index % len(tools)
    return [*tools[shift:], *tools[:shift]]


def checksum(dsn: str, table: str) -> list[str]:
    return sql(dsn, CHECKSUM_SQL.format(table=table)).split("|")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=3, help="uncounted aoetl runs first (broker JIT)")
    parser.add_argument(
        "--tools", "--only", default=",".join(TOOLS), help="comma-separated, e.g. --only psql,aoetl"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_peers.json")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    assert tools and tools[0] in TOOLS and set(tools) <= set(TOOLS), tools

    import yaml

    from aoetl.client import AoetlClient
    from aoetl.devstack import DevStack
    from bench.bench_pipeline import cpu_used, generate_csv, spec_for

    peers_python = ensure_peers_venv() if any(t.startswith("dlt") for t in tools) else None
    STATE.mkdir(parents=True, exist_ok=True)
    csv_path = STATE / f"peers-{args.rows}-seed{args.seed}.csv"
    if not csv_path.exists():
        generate_csv(csv_path, args.rows, seed=args.seed)

    stack = DevStack.from_env(STATE / "stack")  # its own state: never stops a stack it did not start
    endpoints = stack.up()
    os.environ.update(endpoints.env())
    dsn = endpoints.postgres_dsn
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNTIME__DLTHUB_TELEMETRY": "false", "NO_COLOR": "1"}
    # the tools' Python code runs from its cached bytecode, as an installed tool's does (pip compiles it);
    # under PYTHONDONTWRITEBYTECODE every `aoetl run` compiled the project's modules again (~0.2 CPU-s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    rounds: list[dict[str, dict]] = []
    try:
        pids = restart_services(stack.supervisor)
        client = AoetlClient()

        def run_psql(table: str) -> tuple[dict, str]:
            command, script = psql_command(dsn, csv_path, table)
            return timed(command, env, stdin=script), table

        def run_dlt(mode: str) -> Callable[[str], tuple[dict, str]]:
            def run(table: str) -> tuple[dict, str]:
                assert peers_python is not None
                # run in the bench's state folder: dlt looks for a .dlt config folder in its working one
                figures = timed(dlt_command(peers_python, mode, dsn, csv_path, table, table), env, cwd=STATE)
                own = json.loads(figures["stdout"].strip().splitlines()[-1])
                return {**figures, "own_seconds": round(own["seconds"], 3)}, f"{table}.{table}"

            return run

        def run_aoetl(table: str) -> tuple[dict, str]:
            spec_path = STATE / f"spec-{table}.yaml"
            spec = spec_for(csv_path, table) | {"name": "bench-peers"}
            spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
            figures = timed(aoetl_command(sys.executable, spec_path), env)
            run_id = next(
                line.split("submitted run ", 1)[1].split()[0]
                for line in figures["stdout"].splitlines()
                if "submitted run " in line
            )
            result = client.find_result(run_id)
            assert result is not None and result.status.value == "COMPLETED", result
            own = (result.finished_at - result.started_at).total_seconds()
            spec_path.unlink()
            return {**figures, "run_id": run_id, "own_seconds": round(own, 3)}, table

        runners = {
            "psql": run_psql,
            "dlt-arrow": run_dlt("arrow"),
            "dlt-dicts": run_dlt("dicts"),
            "aoetl": run_aoetl,
        }

        def measure(tool: str) -> dict:
            table = f"bench_peers_{tool.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
            cpu_before = cpu_snapshot(pids)
            with PeakRss(pids, STATE / "stack") as rss:
                figures, qualified = runners[tool](table)
            figures["cpu_s"] = cpu_used(cpu_before, cpu_snapshot(pids))  # postgres, kafka, services
            figures["peak_rss_mib"] = rss.result
            figures["rss_timeline_mib"] = rss.timeline()
            figures["checksum"] = checksum(dsn, qualified)
            schema = qualified.split(".")[0] if "." in qualified else None
            figures["columns"] = sql(dsn, COLUMNS_SQL.format(schema=schema or "public", table=table))
            sql(dsn, f"DROP SCHEMA {schema} CASCADE" if schema else f"DROP TABLE {qualified}")
            del figures["stdout"]
            return figures

        warmups = [
            round(measure("aoetl")["seconds"], 2) for _ in range(args.warmups if "aoetl" in tools else 0)
        ]
        for index in range(args.rounds):
            figures = {tool: measure(tool) for tool in rotated(tools, index)}
            reference = (
                figures["psql"]["checksum"] if "psql" in figures else next(iter(figures.values()))["checksum"]
            )
            differ = checksums_agree(reference, {t: f["checksum"] for t, f in figures.items()})
            if differ:
                raise AssertionError(f"round {index}: checksums differ for {differ}: {figures}")
            rounds.append(figures)
            print(
                json.dumps({"round": index, **{t: round(f["seconds"], 2) for t, f in figures.items()}}),
                flush=True,
            )
        client.close()
        versions = peer_versions(peers_python, {"dlt": "dlt", "pyarrow": "pyarrow"}) if peers_python else {}
        machine = machine_info(dsn, versions)  # before the stack stops: it asks PostgreSQL its version
    finally:
        stack.down()

    wall = summarise(rounds)
    report = {
        "benchmark": "batch load, csv -> cast + filter + derive -> postgres, whole processes",
        "rows": args.rows,
        "file_mib": round(csv_path.stat().st_size / 2**20, 1),
        "rounds": args.rounds,
        "psql_method": "one psql: \\copy into a temp staging table, INSERT ... SELECT with the transforms",
        "checksum": dict(
            zip(
                ("rows", "sum_id", "sum_qty", "sum_total", "md5_ids"),
                rounds[0][tools[0]]["checksum"],
                strict=True,
            )
        ),
        "aoetl_warmup_seconds": warmups,
        "median": wall,
        "median_own_seconds": {t: v["median_s"] for t, v in summarise(rounds, "own_seconds").items()},
        "median_cpu_s": median_cpu(rounds),
        "max_peak_rss_mib": max_peak_rss(rounds),
        "round_figures": rounds,
        "machine": machine,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table_text(wall, report["median_own_seconds"]))
    print(json.dumps({"median_cpu_s": report["median_cpu_s"]}))
    print(json.dumps({"max_peak_rss_mib": report["max_peak_rss_mib"]}))
    print(f"wrote {args.out}")
    return 0


def median_cpu(rounds: list[dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Per tool, the median CPU seconds of each process group over the rounds (``tool`` is the tool's own
    process: psql, dlt's Python, the aoetl CLI)."""
    found: dict[str, dict[str, list[float]]] = {}
    for figures in rounds:
        for tool, f in figures.items():
            groups = found.setdefault(tool, {})
            groups.setdefault("tool", []).append(f["process_cpu_s"])
            for group, seconds in f.get("cpu_s", {}).items():
                groups.setdefault(group, []).append(seconds)
    return {
        tool: {group: round(statistics.median(v), 2) for group, v in groups.items()}
        for tool, groups in found.items()
    }


def max_peak_rss(rounds: list[dict[str, dict]]) -> dict[str, dict[str, float | None]]:
    """Per tool, the largest peak RSS (MiB) of each process group over the rounds (``tool`` is the tool's
    own process): flat memory is about the worst round, not the typical one."""
    found: dict[str, dict[str, float | None]] = {}
    for figures in rounds:
        for tool, f in figures.items():
            groups = found.setdefault(tool, {})
            for group, mib in f.get("peak_rss_mib", {}).items():
                known = groups.get(group)
                groups[group] = mib if known is None else max(known, mib or 0.0)
    return found


def table_text(wall: dict[str, dict], own: dict[str, float]) -> str:
    lines = ["| tool | median wall s | own s | vs psql \\copy | vs dlt-arrow |", "|---|---|---|---|---|"]
    for tool, figures in wall.items():
        ratios = [f"{figures[f'vs_{b}']:.2f}x" if figures.get(f"vs_{b}") else "-" for b in BASELINES]
        lines.append(f"| {tool} | {figures['median_s']:.2f} | {own.get(tool, '-')} | {' | '.join(ratios)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
