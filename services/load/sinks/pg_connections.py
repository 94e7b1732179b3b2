"""Idle PostgreSQL connections of the load service, kept per DSN between the sinks that use them.

Why: the worker keeps one sink per destination (a table), and each sink opened its own connection. So a
run into a table no sink had written yet (every run of ``bench/bench_peers.py``, every new table of a
pipeline) started a PostgreSQL backend before its first COPY: a fork, authentication, the session
settings, the ledger's bootstrap DDL, and a backend whose catalog caches are cold, all on the critical
path of the run's first batch. Now a sink gives its connection back here when its run ends (finalize or
abort) or when it is closed, and the next sink with the same DSN takes it.

Guarantees:

* one user at a time: a connection is taken out of the pool while a sink holds it;
* only healthy, idle connections come back: a sink gives a connection back between transactions only, and
  throws a broken one away (``close`` on it, never ``give_back``); a connection taken from the pool is
  checked with one round trip first (PostgreSQL may have restarted since), and a dead one is closed and
  the next one, or a new connection, is used instead, so a restart between runs costs no failed batch;
* bounded: at most ``MAX_IDLE_PER_DSN`` idle connections per DSN (extras are closed), so the load service
  never holds more backends than its open sinks did;
* thread-safe (one lock): sinks of several workers may share a process.

What a connection carries from one sink to the next is the session state every sink sets the same way on
connecting (``postgres._SESSION``: time zone, date style, float digits) and the ledger it bootstrapped,
which is per database, not per destination. A sink's own caches (table shapes) stay with the sink.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import adbc_driver_manager

# Idle connections kept per DSN: one replica loads one batch at a time, so one is reused; a second covers
# a run ending on one destination while the next run's sink on another is already connected.
MAX_IDLE_PER_DSN = 2

_lock = threading.Lock()
_idle: dict[str, list[Any]] = {}


def take(dsn: str, connect: Callable[[], Any]) -> Any:
    """An idle connection to ``dsn`` that answers, else ``connect()`` (which the caller's sink prepares:
    session settings and ledger bootstrap)."""
    while True:
        with _lock:
            found = _idle.get(dsn)
            conn = found.pop() if found else None
        if conn is None:
            return connect()
        if _answers(conn):
            return conn
        close_quietly(conn)


def give_back(dsn: str, conn: Any) -> None:
    """``conn``, idle (no statement of ours in an open transaction), for the next sink of ``dsn``."""
    with _lock:
        idle = _idle.setdefault(dsn, [])
        if len(idle) < MAX_IDLE_PER_DSN:
            idle.append(conn)
            return
    close_quietly(conn)


def close_idle() -> None:
    """Close every idle connection (the service stopping; tests)."""
    with _lock:
        found = [conn for conns in _idle.values() for conn in conns]
        _idle.clear()
    for conn in found:
        close_quietly(conn)


def close_quietly(conn: Any) -> None:
    with contextlib.suppress(adbc_driver_manager.Error):  # it is being thrown away anyway
        conn.close()


def _answers(conn: Any) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        conn.rollback()  # ends the check's transaction: the sink starts from a clean one
    except adbc_driver_manager.Error:
        return False
    return True
