"""``make bench``: every benchmark in this folder, against one local stack, results in bench/results/.

Each script measures its own baseline in the same run and prints JSON; its whole output is kept in
``bench/results/<name>.out`` and its last JSON document in ``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BENCHES = [
    ("bench_planning", []),
    ("bench_transform", []),
    ("bench_extract_memory", []),
    ("bench_sink_postgres", []),
    ("bench_webhook_latency", []),
    ("bench_pipeline", ["--rows", "1000000,5000000", "--repeats", "3"]),
    ("bench_continuous", []),
    ("bench_startup", []),
]


def last_json(text: str) -> object | None:
    """The last top-level JSON document printed (scripts print progress before it)."""
    decoder = json.JSONDecoder()
    found = None
    i = 0
    while (i := text.find("{", i)) != -1:
        try:
            found, end = decoder.raw_decode(text, i)
            i = end
        except json.JSONDecodeError:
            i += 1
    return found


def main() -> int:
    sys.path.insert(0, str(REPO))
    from aoetl.devstack import DevStack

    RESULTS.mkdir(parents=True, exist_ok=True)
    stack = DevStack.from_env(REPO / ".state" / "bench" / "stack")
    env = {**os.environ, **stack.up().env()}
    failed = []
    try:
        for name, args in BENCHES:
            print(f"== {name}", flush=True)
            proc = subprocess.run(
                [sys.executable, str(REPO / "bench" / f"{name}.py"), *args],
                env=env,
                capture_output=True,
                text=True,
            )
            (RESULTS / f"{name}.out").write_text(proc.stdout + proc.stderr)
            figures = last_json(proc.stdout)
            if proc.returncode != 0 or figures is None:
                failed.append(name)
                print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
                continue
            (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2))
            print(json.dumps(figures, indent=2), flush=True)
    finally:
        stack.down()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
