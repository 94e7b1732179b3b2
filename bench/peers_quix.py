"""The quix-streams peer of ``bench/bench_peers_stream.py``: a quix-streams application draining the bench's
topic of JSON events into PostgreSQL with quix-streams' own PostgreSQL sink, as a whole process run by the
peers' own venv (``.state/peers-venv``), so quix-streams never enters the project's venv and aoetl is never
imported here.

The same work as the aoetl spec (``bench.bench_peers_stream.aoetl_spec``): cast ``id``/``qty`` to integers
and ``amount`` to a float, derive ``total = amount * qty``, append to the table the bench created.
quix-streams' defaults otherwise: at-least-once, a checkpoint (sink flush, then offset commit) every
``--commit-interval`` seconds. The sink writes only the event's columns (``include_metadata=False``) and
alters no schema (``schema_auto_update=False``): the table is the bench's.

Runs until SIGTERM (the bench sends it once every id is in the table): quix-streams then flushes its last
checkpoint and leaves the group. Prints one JSON line when it stops: the seconds it ran and what it processed.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from urllib.parse import unquote, urlsplit


def connection(dsn: str) -> dict[str, Any]:
    """psycopg2 keyword arguments from a ``postgresql://user[:password]@host[:port]/db`` DSN (the sink takes
    them one by one; the dev stack trusts local connections, so a missing password is an unused one)."""
    parts = urlsplit(dsn)
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 5432,
        "dbname": parts.path.lstrip("/") or "postgres",
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or "unused"),
    }


def transform(event: dict[str, Any]) -> dict[str, Any]:
    amount, qty = float(event["amount"]), int(event["qty"])
    return {
        "id": int(event["id"]),
        "customer": event["customer"],
        "amount": amount,
        "qty": qty,
        "total": amount * qty,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--commit-interval", type=float, default=5.0, help="quix-streams' default: 5 s")
    args = parser.parse_args()

    from quixstreams import Application
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    started = time.perf_counter()
    processed = 0

    def counted(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal processed
        processed += 1
        return transform(event)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))
    sdf = sdf.apply(counted)
    sdf.sink(
        PostgreSQLSink(
            **connection(args.dsn),
            table_name=args.table,
            schema_auto_update=False,
            include_metadata=False,
        )
    )
    app.run()
    print(json.dumps({"seconds": time.perf_counter() - started, "processed": processed}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
