"""Read a pipeline spec from YAML or JSON and turn validation failures into precise, printable reasons."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.spec.models import PipelineSpec


@dataclass(frozen=True)
class SpecIssue:
    """One reason a spec is invalid: where (a dotted field path) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class SpecError(ValueError):
    """The spec could not be parsed or validated; ``issues`` holds every reason, not only the first."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


def _path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the discriminator's value into loc for tagged unions (source.csv.path); keep it:
    # it tells the user which branch was validated.
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def issues_from_validation(exc: ValidationError) -> list[SpecIssue]:
    return [SpecIssue(_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]


def parse_spec(data: Any) -> PipelineSpec:
    """Validate an already-parsed mapping; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError([SpecIssue("", f"a pipeline spec must be a mapping, got {type(data).__name__}")])
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(issues_from_validation(exc)) from exc


def parse_spec_text(text: str, *, fmt: str = "yaml") -> PipelineSpec:
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError([SpecIssue("", f"not valid {fmt.upper()}: {exc}")]) from exc
    return parse_spec(data)


def load_spec(path: str | Path) -> PipelineSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read {p}: {exc.strerror}")]) from exc
    return parse_spec_text(text, fmt="json" if p.suffix.lower() == ".json" else "yaml")
