"""Cold start of the ``aoetl`` command: whole-process wall time (and CPU time) of ``aoetl --help``,
``aoetl submit --help`` and ``aoetl validate examples/orders/pipeline.yaml`` (no broker needed); with
``--submit`` also ``aoetl submit`` of that spec against the broker in ``KAFKA_BOOTSTRAP_SERVERS`` (each run
leaves a request on the requests topic, which is why ``make bench`` does not pass it).

Baselines measured in the same run: ``python -c pass`` (the interpreter's own start), and the ``--help`` of
a bare two-command typer app and of its command with one argument: the floors any typer CLI with rich help
pays (typer, its vendored click, rich's help renderer; for a command with arguments also pydantic, which
typer coerces them with). The commands run round-robin, one warm-up each first (bytecode compiled, files
in the page cache), so load on the machine shifts all of them alike; each figure is the median of
``--runs``. The ``aoetl`` executable is the entry point installed beside this interpreter (as a user runs
it), importing this checkout. Output is one JSON object, also written to bench/results/bench_startup.json.

    .venv/bin/python bench/bench_startup.py [--runs 15] [--submit]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
EXAMPLE = "examples/orders/pipeline.yaml"

TYPER_FLOOR = '''
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def first(file: Path) -> None:
    """One command, with an argument (typer coerces arguments through pydantic)."""


@app.command()
def second() -> None:
    """Another command."""


app()
'''


def aoetl_command() -> list[str]:
    """The installed entry point next to this interpreter; without one, what it runs."""
    script = Path(sys.executable).parent / "aoetl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from aoetl.cli import app; sys.exit(app())"]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one whole process; it must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = [w for w, _ in samples]
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "cpu_median_s": round(statistics.median(c for _, c in samples), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per command (median)")
    parser.add_argument("--submit", action="store_true", help="also time `aoetl submit` (needs a broker)")
    args = parser.parse_args()

    # this checkout's code, whichever checkout the virtualenv was installed from
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    aoetl = aoetl_command()
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp) / "typer_floor.py"
        floor.write_text(TYPER_FLOOR)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "typer app --help": [sys.executable, str(floor), "--help"],
            "typer app first --help": [sys.executable, str(floor), "first", "--help"],
            "aoetl --help": [*aoetl, "--help"],
            "aoetl submit --help": [*aoetl, "submit", "--help"],
            f"aoetl validate {EXAMPLE}": [*aoetl, "validate", EXAMPLE],
        }
        if args.submit:
            commands[f"aoetl submit {EXAMPLE}"] = [*aoetl, "submit", EXAMPLE]
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for argv in commands.values():
            run_once(argv, env)  # warm-up: bytecode written, files cached
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(run_once(argv, env))
    figures = {name: summary(s) for name, s in samples.items()}
    baseline = figures["python -c pass"]["median_s"]
    for figure in figures.values():
        figure["over_python_s"] = round(figure["median_s"] - baseline, 4)
    report = {
        "bench": "startup",
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "aoetl": " ".join(aoetl),
        "commands": figures,
        "targets_s": {"aoetl --help": 0.3, f"aoetl submit {EXAMPLE}": 0.5},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_startup.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
