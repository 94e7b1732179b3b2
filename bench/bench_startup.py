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
it), importing this checkout, with its bytecode cached as a user's Python caches it (the bench drops
``PYTHONDONTWRITEBYTECODE``: without the cache every run would compile the project's modules again).
``--against DIR`` also times the aoetl commands importing another checkout (e.g. ``git worktree add
/tmp/before main``) in the same rounds, so a change is measured before and after in one run, on one load.
Output is one JSON object, also written to bench/results/bench_startup.json.

    .venv/bin/python bench/bench_startup.py [--runs 15] [--submit] [--against DIR]
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
    parser.add_argument(
        "--against", type=Path, help="another checkout whose aoetl commands are timed in the same rounds"
    )
    args = parser.parse_args()

    env = {**os.environ}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's runs reuse cached bytecode (see the docstring)

    def importing(checkout: Path) -> dict[str, str]:
        """The environment that runs ``checkout``'s code, whichever checkout the virtualenv came from."""
        path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
        return {**env, "PYTHONPATH": path}

    aoetl = aoetl_command()
    checkouts = {"": REPO}
    if args.against:
        checkouts[f" ({args.against})"] = args.against.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp) / "typer_floor.py"
        floor.write_text(TYPER_FLOOR)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "typer app --help": ([sys.executable, str(floor), "--help"], env),
            "typer app first --help": ([sys.executable, str(floor), "first", "--help"], env),
        }
        for label, checkout in checkouts.items():
            code = importing(checkout)
            commands[f"aoetl --help{label}"] = ([*aoetl, "--help"], code)
            commands[f"aoetl submit --help{label}"] = ([*aoetl, "submit", "--help"], code)
            commands[f"aoetl validate {EXAMPLE}{label}"] = ([*aoetl, "validate", EXAMPLE], code)
            if args.submit:
                commands[f"aoetl submit {EXAMPLE}{label}"] = ([*aoetl, "submit", EXAMPLE], code)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for argv, command_env in commands.values():
            run_once(argv, command_env)  # warm-up: bytecode written, files cached
        for _ in range(args.runs):
            for name, (argv, command_env) in commands.items():
                samples[name].append(run_once(argv, command_env))
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
        "against": str(checkouts[f" ({args.against})"]) if args.against else None,
        "commands": figures,
        "targets_s": {"aoetl --help": 0.3, f"aoetl submit {EXAMPLE}": 0.5},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_startup.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
