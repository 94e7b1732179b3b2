"""``make demo``: the bundled orders pipeline, end to end, on a real local Kafka and PostgreSQL.

Starts the local stack and every service as its own process, generates a messy orders export, submits
``examples/orders/pipeline.yaml``, follows the run live, prints the result and what landed in DuckDB,
then stops everything (``--keep`` leaves the stack running for ``aoetl`` commands and the web console,
and prints the console's address and a viewer key to sign in with).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from aoetl.client import AoetlClient
from aoetl.commands.door import DoorAudit, submit_audited
from aoetl.commands.run_display import EXIT_CODES, follow_run, print_result
from aoetl.devstack import DevStack
from examples.orders.generate import generate
from shared.auth.keys import issue_key
from shared.contracts import DEFAULT_TENANT, Role
from shared.kafka.topics import Topics
from shared.redaction import redact
from shared.spec import load_spec
from shared.spec.models import CsvSource, DuckDBDestination

REPO = Path(__file__).resolve().parent.parent
REPLICAS = {"gateway": 1, "orchestrator": 1, "extract": 2, "transform": 2, "load": 1, "monitor": 1}
CONSOLE_URL = "http://127.0.0.1:8000/ui"  # the gateway's default API address (AOETL_API_HOST/PORT)

console = Console()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true", help="leave the stack and services running")
    args = parser.parse_args(argv)

    state = REPO / ".state" / "demo"
    data = state / "data"
    console.rule("[bold]aoetl demo: orders CSV → cast, filter, derive, mask, quality rules → DuckDB")
    files = generate(data, args.rows, files=4)
    console.print(f"generated {args.rows:,} orders in {len(files)} files under {data}")

    spec = load_spec(REPO / "examples" / "orders" / "pipeline.yaml")
    warehouse = state / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    assert isinstance(spec.source, CsvSource) and isinstance(spec.destination, DuckDBDestination)
    spec = spec.model_copy(
        update={
            "source": spec.source.model_copy(update={"path": str(data / "orders-*.csv")}),
            "destination": spec.destination.model_copy(update={"path": str(warehouse)}),
        }
    )

    stack = DevStack.from_env(state / "stack")
    with console.status("starting Kafka (KRaft) and PostgreSQL…"):
        endpoints = stack.up()
    os.environ.update(endpoints.env())
    console.print(f"Kafka at {endpoints.kafka_bootstrap}, PostgreSQL at {redact(endpoints.postgres_dsn)}")
    try:
        with console.status("starting services…"):
            supervisor = stack.supervisor
            started = []
            for name, count in REPLICAS.items():
                if not supervisor.alive(name):
                    started += supervisor.start(name, count)
            supervisor.wait_ready(started, timeout=120)
        console.print(", ".join(f"{n} x{c}" for n, c in REPLICAS.items()) + " running as separate processes")

        client = AoetlClient()
        with client.reader(Topics.EVENTS, Topics.RESULTS, from_beginning=False) as reader:
            request = submit_audited(client, spec)  # audited like `aoetl run`
            console.print(f"submitted run [bold]{request.run_id}[/]")
            result = follow_run(client, reader, request.run_id, timeout=600)
        client.close()
        if result is None:
            console.print("[red]no result within 600 s[/]")
            return 5
        print_result(result)
        show_warehouse(warehouse)
        show_console(result.run_id, keep=args.keep)
        return EXIT_CODES[result.status]
    finally:
        if args.keep:
            console.print(f"stack left running; state in {stack.state_dir} (aoetl dev down to stop)")
        else:
            with console.status("stopping services and the stack…"):
                stack.down()


def show_console(run_id: str, *, keep: bool) -> None:
    """Where the web console shows the run; with ``--keep``, a viewer key of the demo's tenant to sign in
    with (made as ``aoetl auth keys create --tenant default --role viewer`` makes it: audited first)."""
    if not keep:
        console.print(f"web console: `make demo DEMO_ARGS=--keep` keeps the stack up, then {CONSOLE_URL}")
        return
    issued = issue_key(DEFAULT_TENANT, Role.VIEWER, created_by="aoetl demo", description="demo console")
    client = AoetlClient()
    try:
        DoorAudit(client).allowed("keys.create", f"key/{issued.key_id}")
        client.publish(Topics.API_KEYS, issued.key_id, issued.record)
    finally:
        client.close()
    console.print(f"web console: [bold]{CONSOLE_URL}/runs/{run_id}[/]; sign in with this viewer key:")
    print(issued.token)  # plain: to copy as it is


def show_warehouse(path: Path) -> None:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT status, count(*) AS orders, round(sum(total), 2) AS revenue FROM orders "
            "GROUP BY status ORDER BY orders DESC"
        ).fetchall()
        sample = con.execute("SELECT order_id, customer_id, email, total FROM orders LIMIT 3").fetchall()
    table = Table("status", "orders", "revenue", title=f"DuckDB {path.name}: table orders")
    for status, orders, revenue in rows:
        table.add_row(str(status), f"{orders:,}", f"{revenue:,.2f}")
    console.print(table)
    for order_id, customer, email, total in sample:
        console.print(f"  order {order_id} customer {customer} email {email[:16]}… total {total}")


if __name__ == "__main__":
    sys.exit(main())
