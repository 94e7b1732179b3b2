"""Reading a spec or definition file as the CLI submits it, and the checks ``aoetl validate`` adds to the
spec policy's.

A file is a pipeline spec, optionally with a top-level ``triggers:`` list (a definition, as ``aoetl
definitions apply`` registers it); its relative paths are resolved against the file's directory
(``aoetl.spec_paths``).

``sql_issues`` runs, on every SQL text of the transform steps, the very check the transform service runs
when it builds its engine (``shared.transform.expressions``: DuckDB's own parser, the engine's dialect):
a ``filter``/``derive`` expression is exactly one SQL expression, a ``sql`` step's query exactly one
SELECT. So ``validate`` refuses what the service would refuse, with the step's path, before anything is
submitted, and never refuses what the service would accept (a second parser, such as sqlglot's DuckDB
dialect, disagrees with DuckDB on some of its syntax). A postgres source's query is judged by the spec
policy's read-only rule (``shared.policy.sql``, sqlglot in the PostgreSQL dialect), which ``check_spec``
applies for ``validate`` as for the orchestrator.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from aoetl.spec_paths import resolve_spec_paths
from shared.spec import SpecError, SpecIssue, parse_spec
from shared.spec.models import DeriveStep, FilterStep, PipelineSpec, SqlStep
from shared.triggers import DefinitionTrigger, split_definition_document


def load_definition_file(path: Path) -> tuple[PipelineSpec, list[DefinitionTrigger]]:
    """The spec (paths resolved) and triggers of ``path``; ``SpecError`` naming every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read {path}: {exc.strerror}")]) from exc
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError([SpecIssue("", f"not valid {fmt.upper()}: {exc}")]) from exc
    spec_part, triggers = split_definition_document(data)
    return resolve_spec_paths(parse_spec(spec_part), path.parent), triggers


def sql_issues(spec: PipelineSpec) -> list[SpecIssue]:
    """Every transform step whose SQL the transform service would refuse, as ``transforms[i].field``."""
    # imported here: DuckDB is needed by this check only (cold start, see aoetl.cli)
    from shared.transform.errors import InvalidExpressionError
    from shared.transform.expressions import check_expression, check_query, open_sandbox

    issues: list[SpecIssue] = []
    sandbox = None
    try:
        for index, step in enumerate(spec.transforms):
            try:
                if isinstance(step, FilterStep | DeriveStep):
                    check_expression(step.expr, f"transforms[{index}].expr")
                elif isinstance(step, SqlStep):
                    sandbox = sandbox or open_sandbox()
                    check_query(sandbox, step.query, f"transforms[{index}].query")
            except InvalidExpressionError as exc:
                issues.append(SpecIssue(exc.where, exc.detail))
    finally:
        if sandbox is not None:
            sandbox.close()
    return issues
