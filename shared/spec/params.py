"""Parameters: ``${params.name}`` (or ``${params.name:-default}``) placeholders in a spec's string values,
filled from a request's ``parameters``.

The values are hostile (a webhook body, a topic event, a caller), so filling is built to change nothing but
the value it fills, and everything is checked again after it:

* only string values of the spec are filled (an enum, number or boolean field cannot hold a placeholder:
  the spec would not have validated), in one pass: a value that itself reads ``${params.x}`` is text;
* in SQL text (``filter.expr``, ``derive.expr``, ``sql.query``, a postgres ``source.query``) a placeholder
  is never pasted as SQL: it becomes a SQL string literal that sqlglot builds (quotes doubled), and the
  filled text must parse to exactly the tree of the template with each placeholder read as one string
  literal, so no value can end a literal, add a clause or a statement. Write the placeholder unquoted
  where a value goes (``day = ${params.day}``; cast it for a number: ``CAST(${params.n} AS INT)``); one
  written inside quotes is refused. (A postgres source query is read-only-checked at definition time as
  written, so it takes no placeholders in practice: use ``cursor_start``, a bound value, instead.)
* the filled spec is validated again as a whole (``parse_spec``), and the caller then runs the full spec
  policy (``shared.policy.check_spec``) on it, so a parameter cannot smuggle a path out of the data roots,
  a URL past the egress rules, a system table or internal topic past the name rules.

Validation: a placeholder without default whose parameter is not given is an issue at the field's path
(``source.path``); a given parameter the spec has no placeholder for is an issue at ``parameters.<name>``.
A spec without any placeholder takes no parameters and ignores the ones it is given (they stay the run's
metadata, as before parameters were filled: triggers may extract them for the record).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from shared.spec.loader import SpecError, SpecIssue, parse_spec
from shared.spec.models import PipelineSpec

PLACEHOLDER = re.compile(r"\$\{params\.([A-Za-z_][A-Za-z0-9_]{0,63})(?::-([^}]*))?\}")
_MARKER = "${params."  # how every placeholder begins
MAX_VALUE_CHARS = 4096  # a parameter is a value (a day, an id, a file name), not a document
# data paths of the SQL-bearing fields, and the dialect each is read in (transforms run on DuckDB)
_SQL_FIELDS = (
    (re.compile(r"^transforms\[\d+\]\.(expr|query)$"), "duckdb"),
    (re.compile(r"^source\.query$"), "postgres"),
)


@dataclass(frozen=True)
class Filled:
    spec: PipelineSpec
    parameters: dict[str, str]  # what the run was given: the request's, plus the defaults that applied


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")


def placeholders(spec: PipelineSpec) -> dict[str, list[str]]:
    """Each parameter the spec names, with the field paths it appears at."""
    found: dict[str, list[str]] = {}
    # Most specs have none, and the orchestrator asks for every request: the JSON text (no JSON escape
    # touches "${params.") answers that in ~15 us where dumping and walking the spec took ~40 us.
    if _MARKER not in spec.model_dump_json():
        return found
    for path, text in _strings(spec.model_dump(mode="json")):
        for match in PLACEHOLDER.finditer(text):
            found.setdefault(match.group(1), []).append(path)
    return found


def fill_parameters(spec: PipelineSpec, given: Mapping[str, str]) -> Filled:
    """The spec with its placeholders filled from ``given``; ``SpecError`` with every issue otherwise."""
    names = placeholders(spec)
    if not names:
        return Filled(spec, dict(given))
    issues = [
        SpecIssue(f"parameters.{name}", f"unknown parameter {name!r}: the spec has no ${{params.{name}}}")
        for name in sorted(set(given) - set(names))
    ]
    issues += [
        SpecIssue(f"parameters.{name}", f"longer than {MAX_VALUE_CHARS} characters")
        for name, value in sorted(given.items())
        if len(value) > MAX_VALUE_CHARS
    ]
    used: dict[str, str] = {}

    def value_of(match: re.Match[str], path: str) -> str | None:
        name, default = match.group(1), match.group(2)
        if name in given:
            used[name] = given[name]
        elif default is not None:
            used.setdefault(name, default)
        else:
            issues.append(SpecIssue(path, f"parameter {name!r} is not given and has no default"))
            return None
        return used[name]

    def fill(node: Any, path: str = "") -> Any:
        if isinstance(node, dict):
            return {k: fill(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, str) or not PLACEHOLDER.search(node):
            return node
        dialect = next((d for pattern, d in _SQL_FIELDS if pattern.match(path)), None)
        values = [value_of(m, path) for m in PLACEHOLDER.finditer(node)]
        if any(v is None for v in values):
            return node
        if dialect is None:
            pieces = iter(values)
            return PLACEHOLDER.sub(lambda _: next(pieces) or "", node)
        filled, problem = fill_sql(node, [v or "" for v in values], dialect)
        if problem:
            issues.append(SpecIssue(path, problem))
        return filled

    data = fill(spec.model_dump(mode="json"))
    if issues:
        raise SpecError(issues)
    return Filled(parse_spec(data), used)


def fill_sql(template: str, values: list[str], dialect: str) -> tuple[str, str | None]:
    """``template`` with its placeholders, in order, replaced by ``values`` as SQL string literals, and
    why that is refused (None: it is not). The filled text is accepted only if it parses to the template's
    own tree with each placeholder read as one whole string literal."""
    sentinels = [f"aoetl_param_{uuid.uuid4().hex}" for _ in values]
    quoted = iter(exp.Literal.string(s).sql(dialect=dialect) for s in sentinels)
    marked = PLACEHOLDER.sub(lambda _: next(quoted), template)
    literals = iter(exp.Literal.string(v).sql(dialect=dialect) for v in values)
    filled = PLACEHOLDER.sub(lambda _: next(literals), template)
    unquoted = "in SQL a placeholder stands unquoted where a value goes (it is filled as a string literal)"
    try:
        expected = sqlglot.parse_one(marked, dialect=dialect)
    except SqlglotError as exc:
        return template, f"{unquoted}; with its placeholders as values it is not SQL: {_first_line(exc)}"
    by_sentinel = dict(zip(sentinels, values, strict=True))
    hits = [n for n in expected.find_all(exp.Literal) if n.is_string and n.this in by_sentinel]
    if len(hits) != len(values):
        return template, unquoted
    try:
        actual = sqlglot.parse_one(filled, dialect=dialect)
    except SqlglotError:  # a quoting the generator got wrong: refused, never run (nor echoed: hostile)
        return template, "a parameter made the SQL unreadable"
    expected = expected.transform(
        lambda n: (
            exp.Literal.string(by_sentinel[n.this])
            if isinstance(n, exp.Literal) and n.is_string and n.this in by_sentinel
            else n
        )
    )
    if actual != expected:
        return template, "a parameter changed the structure of the SQL"
    return filled, None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
