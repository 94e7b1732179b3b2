"""``shared.sql``: identifier quoting (proven on a real DuckDB) and the one transient-error rule that the
PostgreSQL source and sink share."""

from __future__ import annotations

import adbc_driver_manager as adbc
import duckdb
import psycopg
import pytest

from shared.sql import TRANSIENT_SQLSTATES, is_transient_database_error, is_transient_sqlstate, quote_ident

pytestmark = pytest.mark.unit

HOSTILE_NAMES = ["plain", "with space", 'a"b', '"; DROP TABLE t; --', "it's", "ümlaut", 'x""y']


def test_quote_ident_doubles_quotes() -> None:
    assert quote_ident("a") == '"a"'
    assert quote_ident('a"b') == '"a""b"'


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_quoted_names_are_one_identifier(name: str) -> None:
    """Whatever a column is called, the quoted name creates and selects exactly that column."""
    con = duckdb.connect(":memory:")
    con.execute(f"CREATE TABLE t ({quote_ident(name)} INTEGER)")
    con.execute(f"INSERT INTO t ({quote_ident(name)}) VALUES (7)")
    assert con.execute(f"SELECT {quote_ident(name)} FROM t").fetchall() == [(7,)]
    assert [row[0] for row in con.execute("DESCRIBE t").fetchall()] == [name]


@pytest.mark.parametrize(
    "sqlstate",
    ["08006", "08001", "53300", "53100", "57P01", "57P03", "57014", "58030", "40001", "40P01", "55P03"],
)
def test_transient_sqlstates(sqlstate: str) -> None:
    assert is_transient_sqlstate(sqlstate)


@pytest.mark.parametrize(
    "sqlstate", [None, "", "23505", "42P01", "42703", "22P02", "40002", "55000", "54000"]
)
def test_terminal_sqlstates(sqlstate: str | None) -> None:
    assert not is_transient_sqlstate(sqlstate)


def test_every_listed_class_is_two_or_five_characters() -> None:
    assert all(len(code) in (2, 5) for code in TRANSIENT_SQLSTATES)


def test_adbc_errors() -> None:
    unknown = adbc.AdbcStatusCode.UNKNOWN
    # A transient SQLSTATE, whatever the status.
    assert is_transient_database_error(adbc.ProgrammingError("x", status_code=unknown, sqlstate="57P01"))
    # A transport-level status, even with a SQLSTATE that alone would not be transient.
    for status in (adbc.AdbcStatusCode.IO, adbc.AdbcStatusCode.TIMEOUT, adbc.AdbcStatusCode.CANCELLED):
        assert is_transient_database_error(adbc.OperationalError("x", status_code=status, sqlstate="XX000"))
    # No answer from the server at all.
    assert is_transient_database_error(adbc.OperationalError("x", status_code=unknown))
    # The server answered: the statement itself is wrong.
    invalid = adbc.AdbcStatusCode.INVALID_ARGUMENT
    assert not is_transient_database_error(adbc.ProgrammingError("x", status_code=invalid, sqlstate="42703"))
    assert not is_transient_database_error(adbc.IntegrityError("x", status_code=unknown, sqlstate="23505"))
    assert not is_transient_database_error(adbc.ProgrammingError("x", status_code=invalid))


def test_psycopg_errors() -> None:
    assert is_transient_database_error(psycopg.OperationalError("connection refused"))  # no SQLSTATE
    assert is_transient_database_error(psycopg.errors.lookup("40001")("serialization failure"))
    assert is_transient_database_error(psycopg.errors.lookup("57P01")("admin shutdown"))
    assert not is_transient_database_error(psycopg.errors.lookup("42P01")("undefined table"))
    assert not is_transient_database_error(psycopg.errors.lookup("54000")("program limit exceeded"))
    assert not is_transient_database_error(psycopg.ProgrammingError("no SQLSTATE, not operational"))


def test_other_exceptions_are_not_database_transients() -> None:
    assert not is_transient_database_error(ValueError("x"))
