"""The seeded soak: ``python -m tests.faults.soak --minutes N [--seed S]`` (``make chaos SOAK_MINUTES=N``).

Round after round, a few small pipelines (a few thousand rows each) run concurrently through every service
on a private broker and a private PostgreSQL, while one fault drawn from the fault matrix hits the system:
a service SIGKILLed, the broker or PostgreSQL restarted, the load's backends terminated mid-transaction,
replicas added and removed, a transform replica frozen past its session timeout (a zombie), the monitor
killed, or the load group rewound to replay everything it has consumed. Every run is then checked against
its own ledger (the rows generated, kept outside the system), and once more at the end, after all faults.

Prints the seed first (a run is repeatable in its choices, not in its timing), then a table of runs, rows,
faults by kind and anomalies; writes the same as JSON to ``bench/results/soak.json``; exits 1 on any
anomaly (a lost or duplicated row, a run without a result, a run with a wrong result).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aoetl.devstack.kafka import KafkaNode
from aoetl.devstack.postgres import PostgresNode
from shared.contracts import PipelineResult, Stage
from shared.kafka.topics import Topics
from tests.e2e.conftest import System
from tests.faults.harness import (
    OrdersRun,
    RunWatcher,
    group_id,
    orders_run,
    running_system,
    signal_replica,
    start_replicas,
    verdict,
)
from tests.faults.kafka_views import rewind_group, uncommitted_records, wait_group
from tests.faults.servers import (
    private_kafka,
    private_postgres,
    restart_kafka,
    restart_postgres,
    terminate_backends,
    with_application_name,
)
from tests.helpers import make_state_dir, wait_until

REPLICAS = {"orchestrator": 1, "extract": 1, "transform": 2, "load": 2, "monitor": 1}
FAULTS = (
    "kill-extract",
    "kill-transform",
    "kill-load",
    "kill-orchestrator",
    "broker-restart",
    "postgres-restart",
    "pg-terminate",
    "rebalance",
    "zombie-transform",
    "monitor-kill",
    "duplicate-delivery",
)
RESULT_TIMEOUT = 300.0
RESULTS_FILE = Path("bench/results/soak.json")

console = Console()


@dataclass
class Soak:
    system: System
    kafka: KafkaNode
    postgres: PostgresNode
    load_app: str
    watcher: RunWatcher
    rng: random.Random
    work: Path
    runs: list[OrdersRun] = field(default_factory=list)
    results: dict[str, PipelineResult | None] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    fault_errors: Counter[str] = field(default_factory=Counter)
    unexpected_exits: Counter[str] = field(default_factory=Counter)

    # ------------------------------------------------------------------------------------- rounds
    def round(self, number: int, concurrency: int, faults: Sequence[str] = FAULTS) -> None:
        fault = self.rng.choice(faults)
        batch = [self._new_run(number, i) for i in range(concurrency)]
        for run in batch:
            self.watcher.submit(run)
            self.runs.append(run)
        if fault != "duplicate-delivery":
            self._inject_mid_run(fault, batch)
        deadline = time.monotonic() + RESULT_TIMEOUT  # for the round: a stuck system costs it once
        for run in batch:
            self.results[run.run_id] = self._await(run.run_id, deadline)
        if fault == "duplicate-delivery":
            self._inject(fault)
        self._restore_replicas()
        bad = {run.label: p for run in batch if (p := self._problems(run))}
        style = "red" if bad else "green"
        console.print(
            f"[{style}]round {number:3d}[/] {fault:<18} {len(batch)} runs, "
            f"{sum(len(r.rows) for r in batch):6d} rows: {bad or 'exact'}"
        )

    def _problems(self, run: OrdersRun) -> list[str]:
        try:
            return verdict(self.postgres.dsn, run, self.results.get(run.run_id)).problems
        except Exception as exc:  # checked again, and counted, in the summary
            return [f"not verifiable now: {exc!r}"]

    def _new_run(self, number: int, index: int) -> OrdersRun:
        rng = self.rng
        return orders_run(
            self.work / f"r{number}-{index}",
            f"soak-{number}-{index}",
            rng.randint(2_000, 6_000),
            seed=rng.randrange(1 << 30),
            files=rng.randint(1, 3),
            batch_rows=rng.choice([250, 500, 1_000]),
            parallelism=rng.randint(1, 4),
        )

    def _await(self, run_id: str, deadline: float) -> PipelineResult | None:
        try:
            return self.watcher.await_result(run_id, timeout=max(1.0, deadline - time.monotonic()))
        except AssertionError:
            return None

    def _inject_mid_run(self, fault: str, batch: list[OrdersRun]) -> None:
        """Wait until a run of the round reaches a random stage (or ends), then strike."""
        stage = self.rng.choice([Stage.EXTRACT, Stage.TRANSFORM, Stage.LOAD])

        def reached() -> bool:
            self.watcher.poll()
            return any(self.watcher.saw(r.run_id, stage) or self.watcher.result(r.run_id) for r in batch)

        with contextlib.suppress(AssertionError):
            wait_until(reached, timeout=60, message=f"a run at {stage.value}")
        self._inject(fault)

    # ------------------------------------------------------------------------------------- faults
    def _inject(self, fault: str) -> None:
        self.faults[fault] += 1
        action: dict[str, Callable[[], None]] = {
            "kill-extract": lambda: self._kill("extract"),
            "kill-transform": lambda: self._kill("transform"),
            "kill-load": lambda: self._kill("load"),
            "kill-orchestrator": lambda: self._kill("orchestrator"),
            "broker-restart": lambda: restart_kafka(self.kafka),
            "postgres-restart": lambda: restart_postgres(self.postgres),
            "pg-terminate": self._terminate_backends,
            "rebalance": self._rebalance,
            "zombie-transform": self._zombie,
            "monitor-kill": lambda: self._kill("monitor", wait=False),
            "duplicate-delivery": self._replay_load_input,
        }
        try:
            action[fault]()
        except Exception as exc:  # a fault that could not be applied as planned is reported, not fatal
            self.fault_errors[fault] += 1
            console.print(f"[yellow]fault {fault} not applied as planned: {exc!r}[/]")

    def _alive(self, service: str) -> list[Any]:
        return self.system.supervisor.alive(service)

    def _kill(self, service: str, *, wait: bool = True) -> None:
        victim = self.rng.choice(self._alive(service))
        signal_replica(victim, signal.SIGKILL, wait_exit=10)
        start_replicas(self.system, service, wait=wait)

    def _terminate_backends(self) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            terminate_backends(self.postgres.dsn, self.load_app)
            time.sleep(0.05)  # a fault's own pacing, not a test waiting for a condition

    def _rebalance(self) -> None:
        for service in ("transform", "load"):
            old = self._alive(service)
            start_replicas(self.system, service)
            signal_replica(self.rng.choice(old), signal.SIGTERM)

    def _zombie(self) -> None:
        members = len(self._alive("transform"))
        zombie = self.rng.choice(self._alive("transform"))
        signal_replica(zombie, signal.SIGSTOP, wait_exit=None)
        try:
            wait_group(self.kafka.bootstrap, group_id(self.system, "transform"), members - 1, timeout=60)
        finally:
            signal_replica(zombie, signal.SIGCONT, wait_exit=None)

    def _replay_load_input(self) -> None:
        group = group_id(self.system, "load")
        inputs = [self.system.client.topic(Topics.DATA_TRANSFORMED), self.system.client.topic(Topics.CONTROL)]
        count = len(self._alive("load"))
        self.system.supervisor.stop("load")
        wait_group(self.kafka.bootstrap, group, 0)
        rewind_group(self.kafka.bootstrap, group, inputs)
        start_replicas(self.system, "load", count)
        wait_until(
            lambda: uncommitted_records(self.kafka.bootstrap, group, inputs) == 0,
            timeout=RESULT_TIMEOUT,
            interval=1,
            message="the load group to consume its input again",
        )

    def _restore_replicas(self) -> None:
        """Bring every service back to its replica count (a fenced zombie may exit, by design)."""
        for service, want in REPLICAS.items():
            missing = want - len(self._alive(service))
            if missing > 0:
                self.unexpected_exits[service] += missing
                start_replicas(self.system, service, missing, wait=service != "monitor")

    def _late_result(self, run_id: str, missing: bool) -> dict[str, Any]:
        """For a run whose result the watcher did not see in time: is there one in the results topic now?
        Tells a run that never finished from one that finished late (or a watcher that missed it)."""
        if not missing:
            return {}
        try:
            late = self.system.client.find_result(run_id)
        except Exception as exc:
            return {"result_in_topic_now": f"not readable: {exc!r}"}
        if late is None:
            return {"result_in_topic_now": None}
        return {"result_in_topic_now": late.status.value, "finished_at": late.finished_at.isoformat()}

    # ------------------------------------------------------------------------------------ summary
    def summary(self, seed: int, minutes: float, elapsed: float) -> dict[str, Any]:
        verdicts, unverifiable = [], []
        for run in self.runs:
            try:
                verdicts.append((run, verdict(self.postgres.dsn, run, self.results.get(run.run_id))))
            except Exception as exc:
                unverifiable.append({"label": run.label, "run_id": run.run_id, "problems": [repr(exc)]})
        checked = [v for _, v in verdicts]
        anomalies = {
            "lost_rows": sum(v.lost for v in checked),
            "duplicated_rows": sum(v.duplicated for v in checked),
            "runs_without_result": sum(1 for v in checked if v.status is None),
            # a wrong status or row count, or figures off without a row lost or duplicated (bad values)
            "runs_with_wrong_result": sum(
                1
                for v in checked
                if v.wrong_result or (v.figures != v.expected and not v.lost and not v.duplicated)
            ),
            "runs_not_verifiable": len(unverifiable),
        }
        return {
            "seed": seed,
            "minutes_requested": minutes,
            "seconds": round(elapsed, 1),
            "runs": len(self.runs),
            "rows": sum(len(r.rows) for r in self.runs),
            "faults": dict(sorted(self.faults.items())),
            "faults_not_applied_as_planned": dict(sorted(self.fault_errors.items())),
            "replicas_replaced_after_exiting": dict(sorted(self.unexpected_exits.items())),
            "anomalies": anomalies,
            "failed_runs": [
                {"label": run.label, "run_id": run.run_id, "problems": v.problems}
                | self._late_result(run.run_id, v.status is None)
                for run, v in verdicts
                if v.problems
            ]
            + unverifiable,
        }


def render(summary: dict[str, Any]) -> Table:
    table = Table(title=f"soak, seed {summary['seed']}, {summary['seconds']:.0f} s")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("runs", str(summary["runs"]))
    table.add_row("rows", str(summary["rows"]))
    for kind, count in summary["faults"].items():
        skipped = summary["faults_not_applied_as_planned"].get(kind)
        table.add_row(f"fault: {kind}", f"{count}" + (f" ({skipped} not as planned)" if skipped else ""))
    for service, count in summary["replicas_replaced_after_exiting"].items():
        table.add_row(f"replica exited on its own: {service}", str(count))
    for name, count in summary["anomalies"].items():
        style = "red" if count else "green"
        table.add_row(f"[{style}]anomaly: {name.replace('_', ' ')}[/]", f"[{style}]{count}[/]")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=3, help="runs per round")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated subset of: {', '.join(FAULTS)}"
    )
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    if unknown := sorted(set(faults) - set(FAULTS)):
        parser.error(f"unknown faults: {', '.join(unknown)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    console.print(f"[bold]soak seed {seed}[/] ({args.minutes:g} min; repeat with --seed {seed})")
    rng = random.Random(seed)
    work = make_state_dir("aoetl-soak-")
    started = time.monotonic()
    load_app = f"aoetl-soak-{uuid.uuid4().hex[:8]}"
    try:
        with private_kafka() as kafka, private_postgres() as postgres:
            dsn = with_application_name(postgres.dsn, load_app)
            with running_system(kafka.bootstrap, dsn, REPLICAS) as system, RunWatcher(system) as watcher:
                soak = Soak(system, kafka, postgres, load_app, watcher, rng, work)
                deadline = started + args.minutes * 60
                number = 0
                while time.monotonic() < deadline:
                    number += 1
                    soak.round(number, args.concurrency, faults)
                summary = soak.summary(seed, args.minutes, time.monotonic() - started)
                if any(summary["anomalies"].values()):
                    # the services' and the broker's logs are deleted with the system: keep them to debug
                    kept = args.out.parent / f"soak-logs-{seed}"
                    shutil.rmtree(kept, ignore_errors=True)
                    shutil.copytree(system.state_dir / "logs", kept / "services")
                    shutil.copytree(kafka.home, kept / "kafka", ignore=shutil.ignore_patterns("data"))
                    summary["logs"] = str(kept)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(render(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"written to {args.out}")
    return 1 if any(summary["anomalies"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
