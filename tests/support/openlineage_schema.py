"""Validates OpenLineage run events (as JSON) against the specification's JSON Schemas vendored under
``tests/data/openlineage`` (see its README for the source): the event against ``OpenLineage.json``'s
RunEvent, then every facet against the schema its ``_schemaURL`` names, which must be one of the vendored
ones (a facet of an unknown schema fails: it could not be checked).

Formats are checked too: ``uuid`` by jsonschema itself; ``date-time`` (RFC 3339) and ``uri`` by the two
small checkers below, because jsonschema leaves them unchecked unless optional packages are installed.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "openlineage"
CORE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None  # RFC 3339 requires an offset


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme)


@cache
def registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def _validator(url: str) -> jsonschema.Draft202012Validator:
    base, _, pointer = url.partition("#")
    known = registry()
    if base not in {uri for uri in known}:
        raise AssertionError(f"no vendored schema for {url}")
    schema = {"$ref": url} if pointer else {"$ref": base}
    return jsonschema.Draft202012Validator(schema, registry=known, format_checker=FORMATS)


def facets_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    found = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        found += dataset.get("facets", {}).values()
        found += dataset.get("inputFacets", {}).values()
        found += dataset.get("outputFacets", {}).values()
    return found


def validate_run_event(event: dict[str, Any]) -> None:
    """Raises ``jsonschema.ValidationError`` (or AssertionError for an unknown facet schema)."""
    _validator(f"{CORE}#/$defs/RunEvent").validate(event)
    for facet in facets_of(event):
        _validator(facet["_schemaURL"]).validate(facet)
