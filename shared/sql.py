"""SQL helpers every part that writes SQL text shares: identifier quoting and the transient-error rule.

``quote_ident`` is the one way a name from a spec or a batch (a column, a table) enters SQL text, in the
transform engine (DuckDB), the agent's suggested expressions (DuckDB) and the sinks (PostgreSQL, DuckDB):
both dialects quote identifiers the SQL-standard way, so one rule serves them all.

``is_transient_sqlstate`` / ``is_transient_database_error`` decide, for the PostgreSQL source (psycopg and
ADBC) and the PostgreSQL sink (ADBC) alike, whether a failed statement is worth a retry (``TransientError``)
or terminal: a source and a sink that disagreed would retry a lost connection on one side and dead-letter
it on the other.
"""

from __future__ import annotations

import adbc_driver_manager
import psycopg

# SQLSTATE classes (two characters) and codes (five) after which the same work may succeed later.
# https://www.postgresql.org/docs/current/errcodes-appendix.html
TRANSIENT_SQLSTATES: tuple[str, ...] = (
    "08",  # connection exception: the connection was refused, lost or never established
    "53",  # insufficient resources: disk full, out of memory, too many connections, for now
    "57",  # operator intervention: admin/crash shutdown (57P01-57P03), a cancelled statement (57014)
    "58",  # system error outside PostgreSQL: an I/O error of the server
    "40001",  # serialization failure: the transaction lost a race; retrying it is the documented cure
    "40P01",  # deadlock detected: PostgreSQL aborted this transaction to let the other one finish
    "55P03",  # lock not available (lock_timeout / NOWAIT): the holder will release it
)

# ADBC status codes that mean the call did not complete, whatever the server said: the transport failed,
# the call timed out or was cancelled (a killed backend often reports no SQLSTATE at all).
_TRANSIENT_STATUS = frozenset(
    {
        adbc_driver_manager.AdbcStatusCode.IO,
        adbc_driver_manager.AdbcStatusCode.TIMEOUT,
        adbc_driver_manager.AdbcStatusCode.CANCELLED,
    }
)


def quote_ident(name: str) -> str:
    """``name`` as one SQL identifier, whatever characters it holds (``a"b`` -> ``"a""b"``)."""
    return '"' + name.replace('"', '""') + '"'


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    """Whether a statement that failed with this SQLSTATE may succeed if tried again."""
    return bool(sqlstate) and str(sqlstate).startswith(TRANSIENT_SQLSTATES)


def is_transient_database_error(exc: BaseException) -> bool:
    """Whether a psycopg or ADBC error is worth a retry: a transient SQLSTATE, a transport-level ADBC
    status, or an ``OperationalError`` without SQLSTATE (the server never answered: connection refused,
    reset or timed out; both drivers report that as ``OperationalError``)."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if is_transient_sqlstate(sqlstate) or getattr(exc, "status_code", None) in _TRANSIENT_STATUS:
        return True
    return not sqlstate and isinstance(exc, adbc_driver_manager.OperationalError | psycopg.OperationalError)
