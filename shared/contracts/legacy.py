"""Reading run events of RunEvent v1-v3, whose payload was a string map ``details``.

``upcast_details`` is the one place that knows those string keys: ``RunEvent`` calls it before it
validates, so an old event arrives at every reader with the same typed payload a v4 writer would have
given it, and an empty ``details``. The payload is returned as plain data for the model to validate: a
malformed old value fails the event's validation (the event is refused like any undecodable message)
rather than reaching a reader half-parsed. Counters and thresholds that old readers already read leniently
(a missing or unparsable number) keep their old fallbacks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from shared.contracts.base import ControlAction, CursorKind, EventKind, RunStatus
from shared.spec.models import OnFail


def upcast_details(data: Any) -> Any:
    """``data`` (the fields of a RunEvent) with ``details`` read into ``payload`` and emptied."""
    if not isinstance(data, Mapping) or not data.get("details"):
        return data
    details = data["details"]
    out = {**data, "details": {}}
    if not isinstance(details, Mapping) or out.get("payload") is not None:
        return out if isinstance(details, Mapping) else data  # a wrong type: the model's validation says so
    try:
        kind = EventKind(str(data.get("kind")))
    except ValueError:
        return out  # the model's validation reports the kind
    upcast = _UPCASTS.get(kind)
    if upcast is not None:
        out["payload"] = upcast(details)
    return out


def _number(value: str | None) -> int | None:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


def _count(value: str | None, default: int = 0) -> int:
    number = _number(value)
    return default if number is None else max(number, 0)


def _accepted(d: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": EventKind.RUN_ACCEPTED.value,
        "pipeline": d.get("pipeline", ""),
        "stuck_after_s": _number(d.get("stuck_after_s")),
        "continuous": d.get("continuous") == "true",
    }
    if "spec" in d:
        out["spec"] = json.loads(d["spec"])
    return out


def _planned(d: Mapping[str, str]) -> dict[str, Any]:
    return {"type": EventKind.RUN_PLANNED.value, "splits": json.loads(d["plan"]) if "plan" in d else []}


def _extracted(d: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": EventKind.SPLIT_EXTRACTED.value,
        "attempt": _count(d.get("attempt")),
        "split_index": _count(d.get("split")),
        "cursor_max": d.get("cursor_max"),
    }
    if d.get("cursor_kind") in {k.value for k in CursorKind}:
        out["cursor_kind"] = d["cursor_kind"]
    return out


def _loaded(d: Mapping[str, str]) -> dict[str, Any]:
    # v1-v3 readers counted a batch as applied unless the event said otherwise
    return {"type": EventKind.BATCH_LOADED.value, "applied": d.get("applied", "true") == "true"}


def _violation(d: Mapping[str, str]) -> dict[str, Any]:
    on_fail = d.get("on_fail")
    return {
        "type": EventKind.QUALITY_VIOLATION.value,
        "rule": d.get("rule", "?"),
        # an unknown level asks for nothing: only 'fail' ever ended a run
        "on_fail": on_fail if on_fail in {o.value for o in OnFail} else OnFail.WARN.value,
        "reason": d.get("reason", "a data-quality rule failed"),
        "failed_rows": _count(d.get("failed_rows")),
        "sample": _sample(d.get("sample")),
    }


def _sample(text: str | None) -> list[dict[str, Any]]:
    """The sample rows, if the JSON text survived (v1-v3 cut it at 2000 characters, often mid-row)."""
    try:
        rows = json.loads(text or "[]")
    except ValueError:
        return []
    if not isinstance(rows, list):
        return []
    flat = (bool, int, float, str, type(None))
    return [
        {str(k): v for k, v in row.items() if isinstance(v, flat)} for row in rows if isinstance(row, dict)
    ]


def _decision(d: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": EventKind.AGENT_DECISION.value,
        "decision_id": d.get("decision_id", ""),
        "action": d.get("action", ""),
        "category": d.get("category", ""),
        "reason": d.get("reason", ""),
        "error_class": d.get("error_class", ""),
        "signature": d.get("signature", ""),
    }
    if "spec" in d:
        out["spec"] = json.loads(d["spec"])
    return out


def _retried(d: Mapping[str, str]) -> dict[str, Any] | None:
    attempt = _number(d.get("attempt"))
    if attempt is None:
        return None  # the orchestrator then counts one more attempt, as v1-v3 readers did
    return {"type": EventKind.TASK_RETRIED.value, "attempt": attempt, "reason": d.get("reason", "")}


def _task_failed(d: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": EventKind.TASK_FAILED.value, "attempt": _count(d.get("attempt"))}
    parts = d.get("offset", "").rsplit("/", 2)  # '<topic>/<partition>/<offset>'; topics have no '/'
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        out["origin"] = {"topic": parts[0], "partition": int(parts[1]), "offset": int(parts[2])}
    return out


def _enum_payload(kind: EventKind, key: str, enum: type[StrEnum]) -> Callable[..., Any]:
    def upcast(d: Mapping[str, str]) -> dict[str, Any] | None:
        value = d.get(key)
        return {"type": kind.value, key: value} if value in {e.value for e in enum} else None

    return upcast


def _stream(d: Mapping[str, str]) -> dict[str, Any]:
    return {
        "type": EventKind.STREAM_PROGRESS.value,
        "heartbeat": d.get("heartbeat") == "true",
        "topic": d.get("topic"),
        "partition": _number(d.get("partition")),
        "first_offset": _number(d.get("first_offset")),
        "last_offset": _number(d.get("last_offset")),
        "lag": _number(d.get("lag")),
    }


_UPCASTS: dict[EventKind, Callable[[Mapping[str, str]], dict[str, Any] | None]] = {
    EventKind.RUN_ACCEPTED: _accepted,
    EventKind.RUN_PLANNED: _planned,
    EventKind.SPLIT_EXTRACTED: _extracted,
    EventKind.BATCH_LOADED: _loaded,
    EventKind.QUALITY_VIOLATION: _violation,
    EventKind.AGENT_DECISION: _decision,
    EventKind.TASK_RETRIED: _retried,
    EventKind.TASK_FAILED: _task_failed,
    EventKind.RUN_FINALIZED: _enum_payload(EventKind.RUN_FINALIZED, "action", ControlAction),
    EventKind.RUN_FINISHED: _enum_payload(EventKind.RUN_FINISHED, "status", RunStatus),
    EventKind.STREAM_PROGRESS: _stream,
}
