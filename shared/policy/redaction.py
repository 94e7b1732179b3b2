"""Error texts describe data; they never echo it.

An error travels far: into the run's result (``GET /runs/{id}``, ``aoetl status``), its events, dead
letters, alerts and logs, all of which reach people who may not read the source. So where a library's
message quotes a value it could not read or convert (pyarrow: ``Expected 2 columns, got 3: <the row>``,
DuckDB: ``Could not convert string '<value>' to INT32``, PostgreSQL: ``invalid input syntax ... "<value>"``,
``Key (id)=(<value>) already exists``), the value is replaced by a description of its shape (length and
kinds of characters), and the whole text is capped. A file's bytes never reach an error this way, nor
does a secret that happens to sit in a data file.
"""

from __future__ import annotations

import re

MAX_ERROR_CHARS = 400

# Values are 'single quoted' (DuckDB, pyarrow) or, in PostgreSQL's messages, "double quoted" after a colon
# or the word value (``invalid input syntax for type integer: "abc"``, ``value "99999" is out of range``).
# Other double-quoted words are identifiers (``column "amount" is of type integer``): kept, they name the
# spec's or the table's columns, and the message is useless without them.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|(?:(?<=: )|(?<=value ))\"(?:[^\"\\]|\\.|\"\")*\"")
# pyarrow's CSV reader appends the offending row: "Expected 2 columns, got 3: a,b,c".
_ROW_ECHO = re.compile(r"(got \d+)\s*:\s.*", re.DOTALL)
# DuckDB's conversion errors, greedy so that a value holding a quote is taken whole.
_CONVERT = re.compile(r"(Could not convert string )'(.*)'( to )")
# PostgreSQL's key details: "Key (id, day)=(5, 2024-01-01) already exists".
_KEY_DETAIL = re.compile(r"\)=\((.*?)\)")
# pyarrow JSON/CSV conversion errors end with the raw value after a colon ("couldn't parse:abc").
_PARSE_TAIL = re.compile(r"(couldn't parse|invalid value)\s*:\s*\S.*", re.IGNORECASE | re.DOTALL)


def describe_text(value: str) -> str:
    """A value's shape, not its content: ``<12 characters: letters, digits>``."""
    kinds = [
        name
        for name, present in (
            ("letters", any(ch.isalpha() for ch in value)),
            ("digits", any(ch.isdigit() for ch in value)),
            ("spaces", any(ch.isspace() for ch in value)),
            ("symbols", any(not (ch.isalnum() or ch.isspace()) for ch in value)),
        )
        if present
    ]
    size = f"{len(value)} character" + ("" if len(value) == 1 else "s")
    return f"<{size}: {', '.join(kinds)}>" if kinds else f"<{size}>"


def _described(match: re.Match[str]) -> str:
    return describe_text(match.group(0)[1:-1])


def scrub(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` with quoted values, echoed rows and key values described, at most ``limit`` characters."""
    cleaned = _CONVERT.sub(lambda m: m.group(1) + describe_text(m.group(2)) + m.group(3), text)
    cleaned = _ROW_ECHO.sub(r"\1 (row not shown)", cleaned)
    cleaned = _PARSE_TAIL.sub(lambda m: f"{m.group(1)} a value (not shown)", cleaned)
    cleaned = _KEY_DETAIL.sub(")=(<values not shown>)", cleaned)
    cleaned = _QUOTED.sub(_described, cleaned)
    if "'" in cleaned:  # an unbalanced quote (a value holding one): whatever follows may be data
        cleaned = cleaned[: cleaned.index("'")] + "<rest not shown>"
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
