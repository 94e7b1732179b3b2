"""User SQL, evaluated safely: a sandboxed in-memory DuckDB connection and the checks around it.

User expressions (``filter.expr``, ``derive.expr``) and queries (``sql.query``) are only ever placed
inside a SELECT over the in-memory Arrow batch. The connection they run on is isolated and locked down:

* ``enable_external_access=false`` - no file, network or extension access (``read_csv('/etc/passwd')``,
  ``COPY ... TO``, ``ATTACH``, ``INSTALL``/``LOAD`` all fail with a permission error);
* ``python_enable_replacements=false`` - DuckDB's Python client would otherwise resolve an unknown table
  name to *any Python variable in the calling frames*, which would let a query read process memory;
* no temp directory (nothing spills to disk), a ``memory_limit`` and a ``threads`` cap from the policy
  (``SandboxLimits``, ``AOETL_POLICY_TRANSFORM_*``), and a time limit per batch enforced by the engine
  (``interrupt``): a query over a hostile batch cannot fill the disk, exhaust the memory or the cores of
  the transform replica, or run forever;
* ``lock_configuration=true`` - the query cannot ``SET`` any of the above back.

Before execution an expression must parse as exactly one expression (so ``1) AS x, (2`` or ``a; DROP ...``
cannot smuggle extra SQL into the SELECT it is placed in) and a query as exactly one SELECT statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from shared.policy.settings import PolicySettings
from shared.redaction import scrub
from shared.spec.models import MaskMethod
from shared.sql import quote_ident
from shared.transform.errors import (
    ExpressionError,
    ForbiddenSqlError,
    InvalidExpressionError,
    SandboxLimitError,
    UnknownColumnError,
)

BATCH = "batch"


@dataclass(frozen=True)
class SandboxLimits:
    """What one transform DuckDB may use (from ``PolicySettings``)."""

    memory_limit: str = "1GB"
    threads: int = 2
    timeout_s: float = 120.0

    @classmethod
    def from_policy(cls, policy: PolicySettings) -> SandboxLimits:
        return cls(policy.transform_memory_limit, policy.transform_threads, policy.transform_timeout_s)


_SANDBOX_SETTINGS = (
    # An in-memory database would spill to ./.tmp; without a temp directory it cannot write anywhere.
    # (First: once external access is off, the temp directory cannot be changed any more.)
    "SET temp_directory = ''",
    "SET max_temp_directory_size = '0B'",
    "SET enable_external_access = false",
    "SET python_enable_replacements = false",
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    # Arrow timestamps with a zone come back in the session zone; UTC keeps them unambiguous.
    "SET TimeZone = 'UTC'",
)
# Last: nothing after this (including user SQL) may change a setting.
_LOCK = "SET lock_configuration = true"

_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')


def open_sandbox(limits: SandboxLimits | None = None) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection that can see nothing but what is registered on it."""
    limits = limits or SandboxLimits()
    conn = duckdb.connect(":memory:")
    for statement in _SANDBOX_SETTINGS:
        conn.execute(statement)
    conn.execute(f"SET memory_limit = '{limits.memory_limit}'")  # validated by PolicySettings' pattern
    conn.execute(f"SET threads = {int(limits.threads)}")
    conn.execute(_LOCK)
    return conn


def check_expression(expr: str, where: str) -> None:
    """Exactly one SQL expression, or ``InvalidExpressionError``."""
    try:
        duckdb.SQLExpression(expr)
    except duckdb.Error as exc:
        raise InvalidExpressionError(where, f"not a single SQL expression: {_first_line(exc)}") from exc


def check_query(conn: duckdb.DuckDBPyConnection, query: str, where: str) -> None:
    """Exactly one SELECT statement, or ``InvalidExpressionError``."""
    try:
        statements = conn.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidExpressionError(where, f"query does not parse: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise InvalidExpressionError(where, f"expected one SELECT statement, got {len(statements)}")
    if statements[0].type is not duckdb.StatementType.SELECT:
        raise InvalidExpressionError(where, f"only SELECT is allowed, got {statements[0].type.name}")


def mask_sql(column: str, method: MaskMethod, salt: bytes) -> str:
    """SQL that masks one column; nulls stay null, the result is text."""
    text = f"CAST({quote_ident(column)} AS VARCHAR)"
    if method is MaskMethod.HASH:
        # encode() gives the UTF-8 bytes; CAST(... AS BLOB) would interpret '\xNN' escapes and let two
        # different strings hash alike.
        return f"sha256(unhex('{salt.hex()}') || encode({text}))"
    if method is MaskMethod.REDACT:
        return f"CASE WHEN {text} IS NULL THEN NULL ELSE '***' END"
    # PARTIAL: keep the last 4 characters; a value of 4 characters or fewer is hidden entirely, since
    # "keeping the last 4" of it would reveal all of it.
    return (
        f"CASE WHEN length({text}) <= 4 THEN repeat('*', length({text})) "
        f"ELSE repeat('*', length({text}) - 4) || right({text}, 4) END"
    )


def translate_error(exc: duckdb.Error, where: str, available: list[str]) -> Exception:
    """Map a DuckDB error to the project's terminal errors (configuration vs data). A data error's text is
    scrubbed: DuckDB quotes the value that failed, which comes from the source."""
    detail = _first_line(exc)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return SandboxLimitError(
            where,
            "the batch needs more memory than the transform may use "
            "(AOETL_POLICY_TRANSFORM_MEMORY_LIMIT); lower run.batch_rows",
        )
    if isinstance(exc, duckdb.PermissionException):
        return ForbiddenSqlError(where, f"access outside the batch is not allowed: {detail}")
    if isinstance(exc, duckdb.BinderException):
        missing = _MISSING_COLUMN.search(str(exc))
        if missing:
            return UnknownColumnError(where, missing.group(1), available)
        return InvalidExpressionError(where, detail)
    if isinstance(exc, duckdb.ParserException | duckdb.CatalogException | duckdb.NotImplementedException):
        return InvalidExpressionError(where, detail)
    if isinstance(exc, duckdb.InvalidInputException) and "configuration has been locked" in str(exc):
        return ForbiddenSqlError(where, detail)
    # Conversion, out-of-range, invalid input at execution: the data did not fit the expression.
    return ExpressionError(where, scrub(detail))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
