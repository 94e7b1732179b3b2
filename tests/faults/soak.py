"""The seeded soak: ``python -m tests.faults.soak --minutes N [--seed S]`` (``make chaos SOAK_MINUTES=N``).

Round after round, a few small pipelines (a few thousand rows each) run concurrently through every service
on a private broker and a private PostgreSQL, while one fault drawn from the fault matrix hits the system:
a service SIGKILLed, the broker or PostgreSQL restarted, the load's backends terminated mid-transaction,
replicas added and removed, a transform replica frozen past its session timeout (a zombie), the monitor
killed, or the load group rewound to replay everything it has consumed. Every run is then checked against
its own ledger (the rows generated, kept outside the system), and once more at the end, after all faults.

``--brokers 3`` soaks a private three-broker KRaft cluster (``tests.faults.cluster``, the machinery of
``aoetl dev up --brokers 3``) instead, with the broker faults in the matrix (``tests.faults.soak_faults``:
the busiest leader SIGKILLed, a broker kept down for a round, a broker restarted). Every topic of the
cluster, the broker's own included, must follow the replication rule (3 replicas, ``min.insync.replicas=2``)
at the start and at the end: else a broker fault would prove nothing about durability, so a topic off the
rule counts as an anomaly, as does a broker that exited without a fault asking for it.

Prints the seed first (a run is repeatable in its choices, not in its timing), then a table of runs, rows,
faults by kind, exactly-once checks and anomalies; writes the same as JSON, with the broker count, to
``bench/results/soak.json``; exits 1 on any anomaly (a lost or duplicated row, a run without a result, a
run with a wrong result, a topic off the replication rule).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aoetl.devstack.postgres import PostgresNode
from shared.contracts import PipelineResult, Stage
from shared.kafka.replication import Replication
from tests.e2e.conftest import System
from tests.faults.cluster import cluster_topics, private_cluster, replication_problems
from tests.faults.harness import OrdersRun, RunWatcher, orders_run, running_system, verdict
from tests.faults.servers import private_kafka, private_postgres, with_application_name
from tests.faults.soak_faults import AFTER_RESULTS, BROKER_FAULTS, FAULTS, REPLICAS, FaultMatrix
from tests.helpers import make_state_dir, wait_until

RESULT_TIMEOUT = 300.0
RESULTS_FILE = Path("bench/results/soak.json")

console = Console()


@dataclass
class Soak:
    system: System
    matrix: FaultMatrix
    postgres: PostgresNode
    watcher: RunWatcher
    rng: random.Random
    work: Path
    runs: list[OrdersRun] = field(default_factory=list)
    results: dict[str, PipelineResult | None] = field(default_factory=dict)
    checks: Counter[str] = field(default_factory=Counter)  # exactly-once verdicts taken, per round / final
    replication: dict[str, list[str]] = field(default_factory=dict)  # problems found, at start / at end
    topics_checked: dict[str, int] = field(default_factory=dict)  # no problems means something only then

    def check_replication(self, when: str) -> None:
        """Every topic of the cluster against the rule for its broker count (``replication_problems``)."""
        try:
            topics = cluster_topics(self.matrix.bootstrap)
            self.topics_checked[when] = len(topics)
            self.replication[when] = replication_problems(self.matrix.bootstrap, topics, self.matrix.brokers)
        except Exception as exc:  # an unreadable cluster is a finding too, not a crash of the soak
            self.replication[when] = [f"not verifiable: {exc!r}"]
        for problem in self.replication[when]:
            console.print(f"[red]replication ({when}): {problem}[/]")

    # ------------------------------------------------------------------------------------- rounds
    def round(self, number: int, concurrency: int) -> None:
        fault = self.matrix.deal()
        batch = [self._new_run(number, i) for i in range(concurrency)]
        for run in batch:
            self.watcher.submit(run)
            self.runs.append(run)
        if fault != AFTER_RESULTS:
            self._inject_mid_run(fault, batch)
        deadline = time.monotonic() + RESULT_TIMEOUT  # for the round: a stuck system costs it once
        for run in batch:
            self.results[run.run_id] = self._await(run.run_id, deadline)
        if fault == AFTER_RESULTS:
            self.matrix.inject(fault)
        self.matrix.restore()
        bad = {run.label: p for run in batch if (p := self._problems(run))}
        style = "red" if bad else "green"
        console.print(
            f"[{style}]round {number:3d}[/] {fault:<18} {len(batch)} runs, "
            f"{sum(len(r.rows) for r in batch):6d} rows: {bad or 'exact'}"
        )

    def _problems(self, run: OrdersRun) -> list[str]:
        self.checks["per_round"] += 1
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
        self.matrix.inject(fault)

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
            self.checks["final"] += 1
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
            "topics_off_the_replication_rule": len({p for found in self.replication.values() for p in found}),
            "brokers_exited_on_their_own": self.matrix.unexpected_broker_exits,
        }
        return {
            "seed": seed,
            "minutes_requested": minutes,
            "seconds": round(elapsed, 1),
            "brokers": self.matrix.brokers,
            "runs": len(self.runs),
            "rows": sum(len(r.rows) for r in self.runs),
            "run_events_seen": sum(len(events) for events in self.watcher.events.values()),
            "exactly_once_checks": dict(sorted(self.checks.items())),
            "replication": {
                "rule": vars(Replication.for_brokers(self.matrix.brokers)),
                "topics_checked": self.topics_checked,
                "problems": self.replication,
            },
            "faults": dict(sorted(self.matrix.injected.items())),
            "faults_not_applied_as_planned": dict(sorted(self.matrix.not_as_planned.items())),
            "replicas_replaced_after_exiting": dict(sorted(self.matrix.unexpected_exits.items())),
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
    title = f"soak, seed {summary['seed']}, {summary['brokers']} broker(s), {summary['seconds']:.0f} s"
    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("runs", str(summary["runs"]))
    table.add_row("rows", str(summary["rows"]))
    table.add_row("run events seen", str(summary["run_events_seen"]))
    for when, count in summary["replication"]["topics_checked"].items():
        table.add_row(f"topics checked for the replication rule ({when})", str(count))
    for when, count in summary["exactly_once_checks"].items():
        table.add_row(f"exactly-once checks ({when.replace('_', ' ')})", str(count))
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
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="1: a single broker; 3: a KRaft cluster, with the broker faults (2 would keep 1 replica)",
    )
    parser.add_argument(
        "--faults",
        default=None,
        help=f"comma-separated subset of: {', '.join(FAULTS)}; with --brokers 3 also "
        f"{', '.join(BROKER_FAULTS)}",
    )
    args = parser.parse_args(argv)
    available = FAULTS + (BROKER_FAULTS if args.brokers > 1 else ())
    faults = [f.strip() for f in (args.faults or ",".join(available)).split(",") if f.strip()]
    if unknown := sorted(set(faults) - set(available)):
        parser.error(f"unknown faults with {args.brokers} broker(s): {', '.join(unknown)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    setup = f"{args.minutes:g} min, {args.brokers} broker(s)"
    console.print(f"[bold]soak seed {seed}[/] ({setup}; repeat with --seed {seed})")
    rng = random.Random(seed)
    work = make_state_dir("aoetl-soak-")
    started = time.monotonic()
    load_app = f"aoetl-soak-{uuid.uuid4().hex[:8]}"
    try:
        servers = private_cluster(args.brokers) if args.brokers > 1 else private_kafka()
        with servers as kafka, private_postgres() as postgres:
            dsn = with_application_name(postgres.dsn, load_app)
            with running_system(kafka.bootstrap, dsn, REPLICAS) as system, RunWatcher(system) as watcher:
                matrix = FaultMatrix(system, kafka, postgres, load_app, rng, faults)
                soak = Soak(system, matrix, postgres, watcher, rng, work)
                soak.check_replication("start")
                deadline = started + args.minutes * 60
                number = 0
                while time.monotonic() < deadline:
                    number += 1
                    soak.round(number, args.concurrency)
                soak.check_replication("end")
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
