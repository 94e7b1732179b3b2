"""Run the agent evaluation set against the model in ``AOETL_LLM_MODEL`` and print the accuracy.

Without a model it says so and exits 0 (it is not part of ``make test``: it costs tokens and its outcome
depends on the model). ``--min-accuracy`` makes it exit 1 below a threshold, for a scheduled CI job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.agent.planner import IntentPlanner
from shared.agent.settings import AgentSettings
from shared.policy.settings import DATA_ROOTS_ENV
from shared.spec.models import CastStep, DedupeStep, DeriveStep, FilterStep, MaskStep, PipelineSpec, SqlStep

HERE = Path(__file__).parent
CASES = HERE / "cases.yaml"
FIXTURES = HERE / "fixtures"


@dataclass
class CaseResult:
    id: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    attempts: int = 0
    seconds: float = 0.0


def check(spec: PipelineSpec | None, expect: dict[str, Any]) -> list[str]:
    """Every expected property the planned spec misses; [] when it has them all."""
    if expect.get("accepted", True) is False:
        return [] if spec is None else ["expected the planner to refuse, but it produced a spec"]
    if spec is None:
        return ["no spec was produced"]
    failures: list[str] = []
    ops = [step.op for step in spec.transforms]
    if "source_type" in expect and spec.source.type != expect["source_type"]:
        failures.append(f"source type {spec.source.type} != {expect['source_type']}")
    destination = spec.destination.model_dump(mode="json")
    for key, value in (expect.get("destination") or {}).items():
        if destination.get(key) != value:
            failures.append(f"destination.{key} = {destination.get(key)!r}, expected {value!r}")
    failures += [f"no {op} step" for op in expect.get("ops_include", []) if op not in ops]
    failures += [f"unexpected {op} step" for op in expect.get("ops_exclude", []) if op in ops]
    exprs = " ".join(
        s.expr if isinstance(s, FilterStep | DeriveStep) else s.query
        for s in spec.transforms
        if isinstance(s, FilterStep | DeriveStep | SqlStep)
    ).lower()
    failures += [
        f"no expression mentions {t!r}" for t in expect.get("expr_mentions", []) if t.lower() not in exprs
    ]
    masked = {c for s in spec.transforms if isinstance(s, MaskStep) for c in s.columns}
    failures += [f"{c} is not masked" for c in expect.get("masked", []) if c not in masked]
    casts = {c: t.value for s in spec.transforms if isinstance(s, CastStep) for c, t in s.columns.items()}
    derived = {s.column for s in spec.transforms if isinstance(s, DeriveStep)}
    for column, kind in (expect.get("casts") or {}).items():
        # A derive that parses the column (e.g. mixed date formats) counts as typing it.
        if casts.get(column) != kind and column not in derived:
            failures.append(f"{column} is not cast to {kind} (casts: {casts})")
    kinds = {rule.rule for rule in spec.quality}
    failures += [f"no {k} rule" for k in expect.get("rules_include", []) if k not in kinds]
    if "dedupe_keys" in expect:
        keys = [s.keys for s in spec.transforms if isinstance(s, DedupeStep)]
        if expect["dedupe_keys"] not in keys:
            failures.append(f"no dedupe on {expect['dedupe_keys']} (dedupes: {keys})")
    return failures


def run(planner: IntentPlanner, cases: list[dict[str, Any]], workdir: Path) -> list[CaseResult]:
    results: list[CaseResult] = []
    for case in cases:
        source = workdir / case["source"]
        intent = case["intent"].replace("{source}", str(source))
        started = time.perf_counter()
        outcome = planner.plan(intent)
        failures = check(outcome.spec, case.get("expect") or {})
        if failures and outcome.reasons:
            failures.append("planner reasons: " + "; ".join(outcome.reasons[:3]))
        results.append(
            CaseResult(case["id"], not failures, failures, outcome.attempts, time.perf_counter() - started)
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.agent_eval", description=__doc__)
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--only", action="append", default=[], help="run only this case id (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--min-accuracy", type=float, default=None)
    args = parser.parse_args(argv)
    settings = AgentSettings()
    if settings.deterministic:
        print("AOETL_LLM_MODEL is not set: the agent evaluation needs a real model; nothing was run.")
        return 0
    cases = yaml.safe_load(args.cases.read_text(encoding="utf-8"))
    if args.only:
        cases = [c for c in cases if c["id"] in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="aoetl-agent-eval-"))
    try:
        for fixture in FIXTURES.iterdir():
            shutil.copy(fixture, workdir / fixture.name)
        # The connectors read only under the spec policy's data roots: the work folder is the one.
        os.environ.setdefault(DATA_ROOTS_ENV, json.dumps([str(workdir)]))
        planner = IntentPlanner.from_settings(settings.model_copy(update={"agent_data_roots": [workdir]}))
        results = run(planner, cases, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    passed = sum(r.passed for r in results)
    accuracy = passed / len(results) if results else 0.0
    if args.json:
        print(
            json.dumps(
                {"model": settings.llm_model, "accuracy": accuracy, "cases": [r.__dict__ for r in results]},
                indent=2,
            )
        )
    else:
        for r in results:
            print(f"{'PASS' if r.passed else 'FAIL'} {r.id} ({r.attempts} draft(s), {r.seconds:.1f}s)")
            for failure in r.failures:
                print(f"     - {failure}")
        print(f"accuracy: {passed}/{len(results)} = {accuracy:.0%} with {settings.llm_model}")
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
