"""What the planning model sees and may call: the three tool schemas, the system prompt, and the profile
in the form (and the few tokens) it is shown.

The tools are declared to the model with ``bind_tools`` and never run through LangChain: the planner's
session dispatches each call by name to its own handlers (``planner``), so the model's output is only ever
data. They are built on first use (``bound_tools``): LangChain is needed only when a model is. The
profile is shown to the model cut to what drafting a spec needs (names, types, formats, nulls,
ranges, the listed values of low-cardinality non-PII columns) with the deterministic suggestion.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from shared.agent.errors import AgentError
from shared.agent.profile import SourceProfile
from shared.agent.suggest import DEFAULT_OUTPUT_DIR, compact_dump, suggest_spec
from shared.spec.models import JsonlDestination, Source

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

TOOL_NAMES = ("list_connectors", "profile_source", "propose_spec")
_MAX_TOP_VALUES = 10


class _NoArgs(BaseModel):
    pass


class _ProfileArgs(BaseModel):
    path: str = Field(description="path or glob of a CSV, JSONL or Parquet file")


class _ProposeArgs(BaseModel):
    spec_json: str = Field(description="the complete PipelineSpec as a JSON object (text)")


def _tool(name: str, description: str, schema: type[BaseModel]) -> StructuredTool:
    from langchain_core.tools import StructuredTool

    # The function is never called through LangChain: the planner's session dispatches to its handlers.
    return StructuredTool.from_function(
        func=lambda **_: None, name=name, description=description, args_schema=schema
    )


@cache
def bound_tools() -> list[StructuredTool]:
    """The tools as the model is told of them (``bind_tools``), in the order of ``TOOL_NAMES``."""
    return [
        _tool(
            "list_connectors", "List source connectors, destinations, transform ops and rule kinds.", _NoArgs
        ),
        _tool(
            "profile_source",
            "Profile a data file: columns, inferred types, nulls, keys, PII, ranges, and a suggested spec.",
            _ProfileArgs,
        ),
        _tool(
            "propose_spec",
            "Submit a complete pipeline spec as JSON. The answer is ACCEPTED or REJECTED with reasons to "
            "fix.",
            _ProposeArgs,
        ),
    ]


SYSTEM_PROMPT = """You build data pipeline specs for aoetl by calling tools. You never write code.
1. If you do not know the source's columns, call profile_source with the file path.
2. Call propose_spec with one complete PipelineSpec JSON object:
   {{"name": "lowercase_name", "source": {{...}}, "transforms": [...], "quality": [...],
    "destination": {{...}}}}
3. If propose_spec answers REJECTED, fix every listed reason and call propose_spec again.
Rules:
- Use only the source connectors, destinations, transform ops and quality rules listed below, with their
  fields exactly as named (unknown fields are errors).
- Use only columns that exist in the source profile, or that an earlier transform step creates.
- CSV columns are read as text: add a "cast" step before comparing numbers or dates.
- "filter" and "derive" expressions are SQL (DuckDB) over the batch's columns; a filter keeps matching rows.
- Prefer the profile's suggested source, transforms and quality rules as a starting point.
Vocabulary:
{vocabulary}
"""


def source_key(source: Source) -> str:
    """What makes two sources read the same sample columns (null_values only changes values)."""
    data = source.model_dump(mode="json", exclude={"null_values"})
    path = data.get("path")
    if isinstance(path, str) and not path.startswith(("http:", "https:")):
        data["path"] = str(Path(path).expanduser().absolute())
    return json.dumps(data, sort_keys=True)


def profile_for_model(profile: SourceProfile) -> dict[str, Any]:
    """The profile in the fewest tokens, with the deterministic suggestion as a starting point."""
    columns = []
    for c in profile.columns:
        entry: dict[str, Any] = {"name": c.name, "type": c.inferred_type.value if c.inferred_type else None}
        if c.formats:
            entry["formats"] = c.formats
        if c.null_rate:
            entry["null_rate"] = round(c.null_rate, 3)
        entry["distinct"] = c.distinct_count
        for attr in ("pii", "min", "max"):
            if getattr(c, attr) is not None:
                entry[attr] = getattr(c, attr)
        if c.top_values:
            entry["values"] = c.top_values[:_MAX_TOP_VALUES]
        if c.na_markers:
            entry["na_markers"] = c.na_markers
        columns.append(entry)
    out: dict[str, Any] = {
        "source": profile.source,
        "sampled_rows": profile.sampled_rows,
        "sample": profile.sample_description(),
        "columns": columns,
        "candidate_keys": profile.candidate_keys,
        "key_duplicates": profile.key_duplicates,
        "duplicate_rows": profile.duplicate_rows,
    }
    try:
        placeholder = JsonlDestination(path=f"{DEFAULT_OUTPUT_DIR}/x")
        suggested = compact_dump(suggest_spec(profile, placeholder).spec)
        out["suggested"] = {k: suggested[k] for k in ("source", "transforms", "quality") if k in suggested}
    except AgentError as exc:
        out["suggested"] = f"none ({exc})"
    return out
