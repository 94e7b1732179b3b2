"""PostgreSQL source queries: exactly one read-only SELECT, decided by a real SQL parser (sqlglot).

The connector places a query inside its own ``SELECT ... FROM (<query>) AS src``. A regular expression
cannot tell what that text does (``1) ; DROP TABLE x; --`` closes the parenthesis), a parser can. A query
is accepted when sqlglot, in the PostgreSQL dialect, reads it as exactly one statement that is a SELECT
(or ``WITH ... SELECT``, ``UNION``/``INTERSECT``/``EXCEPT``, a parenthesised SELECT) and nothing inside it
writes, locks or leaves the statement: no ``INSERT``/``UPDATE``/``DELETE``/``MERGE`` (writable CTEs
included), no ``SELECT ... INTO``, no ``FOR UPDATE``/``FOR SHARE``, no DDL, ``COPY``, ``SET`` or
transaction control.

Functions that reach outside the transaction or the database are refused too, because a read-only
transaction does not stop them: server files (``pg_read_file``, ``lo_import``...), other connections
(``dblink``), session and server control (``set_config``, ``pg_terminate_backend``...), and the functions
that run a query given as text (``query_to_xml``, ``ts_stat``...), which would hide a statement from this
check. Every ``pg_*`` function is refused except a few harmless ones. So are the credential catalogs
(``pg_authid``, ``pg_shadow``, user mappings, large objects) and the system's own schema (``aoetl``).

What runs is the query as sqlglot prints it back from the tree it checked (comments dropped), not the
text as given: if the two parsers ever disagreed on where a string or comment ends, what PostgreSQL
receives is still exactly the statement that was checked. The connector also runs it in a READ ONLY
transaction with a statement timeout (``shared/connectors/postgres.py``); a database role with only the
privileges the pipeline needs is the last line.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from shared.policy.names import SYSTEM_SCHEMA, split_table, system_schema_problem
from shared.policy.settings import PolicySettings
from shared.policy.tenancy import DEFAULT_TENANT
from shared.spec.loader import SpecIssue
from shared.spec.models import PipelineSpec, PostgresSource

DIALECT = "postgres"

_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery)
# Statement kinds that must not appear anywhere in the tree (DML covers INSERT/UPDATE/DELETE/MERGE/COPY,
# DDL covers CREATE and INSERT). Command is sqlglot's fallback for text it only recognised by its first
# word (EXPLAIN ANALYZE ..., DO ..., CALL ...): never something to run.
_FORBIDDEN_NODES: tuple[type[exp.Expr], ...] = tuple(
    node
    for node in (
        getattr(exp, name, None)
        for name in (
            "DML", "DDL", "Drop", "Alter", "Command", "Into", "Lock", "Set", "Transaction", "Commit",
            "Rollback", "TruncateTable", "Grant", "Revoke", "Use", "Pragma", "Analyze", "Kill", "Refresh",
            "Cache", "Uncache", "LoadData", "Comment", "Execute", "Declare", "Describe", "Summarize",
        )
    )
    if isinstance(node, type)
)  # fmt: skip
_HARMLESS_PG_FUNCTIONS = frozenset({"pg_typeof", "pg_column_size", "pg_size_pretty"})
_FORBIDDEN_FUNCTION = re.compile(
    r"^(pg_.*|lo_.*|dblink.*|set_config|(query|cursor|table|schema|database)_to_xml.*|"
    r"query_to_xmlschema|ts_stat|ts_rewrite)$"
)
_CREDENTIAL_CATALOGS = frozenset(
    {
        "pg_authid",
        "pg_shadow",
        "pg_user_mapping",
        "pg_user_mappings",
        "pg_largeobject",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_file_settings",
    }
)


class UnsafeQueryError(ValueError):
    """The query is not exactly one read-only SELECT; the message says why."""


def _function_name(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return None


def _table_problem(node: exp.Table) -> str | None:
    name, schema = str(node.name).lower(), str(node.db or "").lower()
    if name in _CREDENTIAL_CATALOGS:
        return f"reading {name} is not allowed"
    if schema == SYSTEM_SCHEMA:
        return f"the schema {SYSTEM_SCHEMA!r} belongs to the system"
    return None


def _node_problem(node: exp.Expr) -> str | None:
    if isinstance(node, _FORBIDDEN_NODES):
        return f"only a read-only SELECT is allowed; the query contains {type(node).__name__.upper()}"
    if isinstance(node, exp.Select) and node.args.get("locks"):
        return "row locks (FOR UPDATE/FOR SHARE) are not allowed"
    name = _function_name(node)
    if name and name not in _HARMLESS_PG_FUNCTIONS and _FORBIDDEN_FUNCTION.match(name):
        return f"the function {name}() is not allowed in a source query"
    if isinstance(node, exp.Table):
        return _table_problem(node)
    return None


def normalize_select(query: str) -> str:
    """The query as it will run (see the module docstring), or ``UnsafeQueryError`` saying why not."""
    try:
        statements = [s for s in sqlglot.parse(query, dialect=DIALECT) if s is not None]
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeQueryError(f"not a valid SQL query: {first}") from exc
    if len(statements) != 1:
        raise UnsafeQueryError(f"exactly one statement is allowed, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, _ROOTS):
        raise UnsafeQueryError(f"only a SELECT is allowed, got {type(tree).__name__.upper()}")
    for node in tree.walk():
        problem = _node_problem(node)
        if problem:
            raise UnsafeQueryError(problem)
    return tree.sql(dialect=DIALECT, comments=False)


def source_table_problem(table: str) -> str | None:
    schema, name = split_table(table)
    if name.lower() in _CREDENTIAL_CATALOGS:
        return f"reading {name} is not allowed"
    if schema.lower() == SYSTEM_SCHEMA:
        return system_schema_problem(schema)
    return None


def check_postgres_source(
    spec: PipelineSpec, policy: PolicySettings, tenant: str = DEFAULT_TENANT
) -> list[SpecIssue]:
    """The policy rule: a postgres source's query or table (the same for every tenant)."""
    source = spec.source
    if not isinstance(source, PostgresSource):
        return []
    if source.query is not None:
        try:
            normalize_select(source.query)
        except UnsafeQueryError as exc:
            return [SpecIssue("source.postgres.query", str(exc))]
    if source.table is not None:
        problem = source_table_problem(source.table)
        if problem:
            return [SpecIssue("source.postgres.table", problem)]
    return []
