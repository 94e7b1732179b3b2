"""Natural language -> ``PipelineSpec``, built by an LLM through tool calls and checked by us at each step.

The model gets three tools (bound with ``bind_tools``) and nothing else:

* ``list_connectors()`` - the spec vocabulary: connectors from ``connector_catalog()``, destinations,
  transform ops, rule kinds;
* ``profile_source(path)`` - the deterministic profile of a file under the allowed data roots, plus the
  deterministic suggestion as a starting point;
* ``propose_spec(spec_json)`` - a complete draft. It is accepted only if it passes ``parse_spec``, is
  grounded (``catalog.check_grounding``: known connector, columns that exist in the profile) and runs on
  the sample rows (``suggest.dry_run``). Otherwise the tool answers ``REJECTED`` with every precise reason
  and the model may repair the draft, up to ``agent_max_repairs`` times.

The tools' schemas, the prompt and the profile as the model sees it are in ``tools``; here is the
conversation. Tool calls are dispatched by name to our own functions; the model's output is only ever data
(tool arguments, a spec). Without a model, ``plan`` is honest: a bare source path is answered by the
deterministic suggestion, anything else is rejected with the reason that an LLM is needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.agent.catalog import check_connector, check_grounding, spec_vocabulary
from shared.agent.errors import AgentError
from shared.agent.llm import PLANS, TOOL_CALLS, call_model, make_chat_model, model_label
from shared.agent.profile import SourceProfile, profile_source
from shared.agent.settings import AgentSettings
from shared.agent.sources import data_file_type, source_from_argument
from shared.agent.suggest import (
    DEFAULT_OUTPUT_DIR,
    compact_dump,
    dry_run,
    parse_destination_uri,
    pipeline_name_for,
    suggest_spec,
)
from shared.agent.tools import SYSTEM_PROMPT, TOOL_NAMES, bound_tools, profile_for_model, source_key
from shared.connectors.paths import resolve_files
from shared.errors import AoetlError
from shared.spec import SpecError, parse_spec
from shared.spec.models import Destination, PipelineSpec, Source

# LangChain is imported by the session, which runs only with a model: the deterministic answers (a bare
# source path, "an LLM is needed") need none of it, and it costs the CLI seconds at start.
if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

NEEDS_LLM = "natural-language intents need an LLM: set AOETL_LLM_MODEL"
_MAX_RECORDED_ARG = 2000


@dataclass(frozen=True)
class ToolCallRecord:
    name: str
    args: dict[str, Any]
    ok: bool
    summary: str


@dataclass(frozen=True)
class PlanOutcome:
    spec: PipelineSpec | None
    reasons: list[str]
    attempts: int  # drafts proposed (deterministic suggestion: 1)
    tool_calls: list[ToolCallRecord]
    notes: list[str] = field(default_factory=list)
    mode: str = "llm"  # "llm" | "deterministic"

    @property
    def accepted(self) -> bool:
        return self.spec is not None


class IntentPlanner:
    """Turns an intent into a grounded, validated spec. One instance may serve many ``plan`` calls."""

    def __init__(self, model: BaseChatModel | None, *, settings: AgentSettings | None = None) -> None:
        self.settings = settings or AgentSettings()
        self.model = model
        self._label = model_label(model, self.settings.llm_model) if model is not None else "none"

    @classmethod
    def from_settings(cls, settings: AgentSettings | None = None) -> IntentPlanner:
        settings = settings or AgentSettings()
        return cls(make_chat_model(settings), settings=settings)

    def plan(
        self, intent: str, *, source_hint: str | None = None, destination: str | None = None
    ) -> PlanOutcome:
        """``destination`` is a destination URI (``postgres://orders``...) the spec must write to."""
        try:
            fixed_destination = parse_destination_uri(destination) if destination else None
        except AgentError as exc:
            return self._done(PlanOutcome(None, [str(exc)], 0, [], mode="deterministic"))
        path = _bare_source(intent)
        if path is not None:
            return self._done(self._suggest(path, fixed_destination))
        if self.model is None:
            return self._done(PlanOutcome(None, [NEEDS_LLM], 0, [], mode="deterministic"))
        return self._done(_Session(self, intent, source_hint, fixed_destination).run())

    def _done(self, outcome: PlanOutcome) -> PlanOutcome:
        PLANS.labels(outcome.mode, "accepted" if outcome.accepted else "rejected").inc()
        return outcome

    def _suggest(self, argument: str, destination: Destination | None) -> PlanOutcome:
        try:
            source = source_from_argument(argument)
            profile = profile_source(source, sample_rows=self.settings.agent_sample_rows)
            name = pipeline_name_for(profile.source)
            target = destination or parse_destination_uri(f"parquet:{DEFAULT_OUTPUT_DIR}/{name}")
            suggestion = suggest_spec(profile, target, name=name)
        except AoetlError as exc:
            return PlanOutcome(None, [f"{type(exc).__name__}: {exc}"], 1, [], mode="deterministic")
        notes = list(suggestion.notes)
        if destination is None:
            notes.append(f"no destination given: writing Parquet files to {DEFAULT_OUTPUT_DIR}/{name}")
        return PlanOutcome(suggestion.spec, [], 1, [], notes=notes, mode="deterministic")


def _bare_source(intent: str) -> str | None:
    """The intent when it only names a source (a data path or an inline source spec), else None."""
    text = intent.strip().strip("'\"")
    if text.startswith("{"):
        return text
    if not text or any(ch.isspace() for ch in text):
        return None
    if data_file_type(text) is not None or Path(text).suffix.lower() in (".json", ".yaml", ".yml"):
        return text
    return None


# ------------------------------------------------------------------------------------------ session
class _Session:
    """One planning conversation: the messages, the profiles taken, the drafts tried."""

    def __init__(
        self, planner: IntentPlanner, intent: str, hint: str | None, destination: Destination | None
    ) -> None:
        self.planner = planner
        self.settings = planner.settings
        self.intent = intent
        self.hint = hint
        self.destination = destination
        self.profiles: dict[str, SourceProfile] = {}
        self.records: list[ToolCallRecord] = []
        self.attempts = 0
        self.last_reasons: list[str] = []
        self.notes: list[str] = []
        self.accepted: PipelineSpec | None = None
        self.handlers: dict[str, Callable[[dict[str, Any]], tuple[bool, str]]] = {
            "list_connectors": self._list_connectors,
            "profile_source": self._profile_tool,
            "propose_spec": self._propose,
        }

    def run(self) -> PlanOutcome:
        from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

        model = self.planner.model
        assert model is not None
        runnable = model.bind_tools(bound_tools())
        messages: list[BaseMessage] = [
            SystemMessage(SYSTEM_PROMPT.format(vocabulary=json.dumps(spec_vocabulary(), indent=1))),
            HumanMessage(self._request()),
        ]
        for _ in range(self.settings.agent_max_turns):
            reply = call_model(runnable, messages, label=self.planner._label)
            messages.append(reply)
            if not reply.tool_calls:
                messages.append(
                    HumanMessage("Answer only with tool calls: call propose_spec with the complete spec.")
                )
                continue
            for call in reply.tool_calls:
                _, content = self._dispatch(call["name"], call.get("args") or {})
                messages.append(ToolMessage(content, tool_call_id=call.get("id") or call["name"]))
                if self.accepted is not None:
                    return self._outcome()
                if self._given_up():
                    return self._outcome()
        if not self.last_reasons:
            self.last_reasons = [f"no spec was proposed within {self.settings.agent_max_turns} model calls"]
        else:
            self.last_reasons.append(f"no valid spec within {self.settings.agent_max_turns} model calls")
        return self._outcome()

    def _given_up(self) -> bool:
        return self.attempts > self.settings.agent_max_repairs and self.accepted is None

    def _outcome(self) -> PlanOutcome:
        reasons = [] if self.accepted is not None else list(self.last_reasons)
        if self.accepted is None and self._given_up():
            reasons.append(
                f"rejected after {self.attempts} drafts "
                f"(AOETL_AGENT_MAX_REPAIRS={self.settings.agent_max_repairs})"
            )
        return PlanOutcome(self.accepted, reasons, self.attempts, list(self.records), notes=self.notes)

    def _request(self) -> str:
        parts = [f"Intent: {self.intent}"]
        if self.hint:
            parts.append(f"Source: {self.hint}")
            ok, content = self._profile(self.hint, trusted=True)
            parts.append(
                ("Profile of the source:\n" if ok else "The source could not be profiled: ") + content
            )
        if self.destination is not None:
            parts.append(f"The destination must be exactly: {json.dumps(compact_dump(self.destination))}")
        return "\n".join(parts)

    # ----------------------------------------------------------------------------------- dispatch
    def _dispatch(self, name: str, args: dict[str, Any]) -> tuple[bool, str]:
        handler = self.handlers.get(name)
        if handler is None:
            ok, content = False, f"unknown tool {name!r}; the only tools are {', '.join(TOOL_NAMES)}"
        else:
            try:
                ok, content = handler(args)
            except AoetlError as exc:  # our own errors are answers for the model, never crashes
                ok, content = False, f"{type(exc).__name__}: {exc}"
        TOOL_CALLS.labels(name if handler else "unknown", "ok" if ok else "error").inc()
        shown = {k: (v[:_MAX_RECORDED_ARG] if isinstance(v, str) else v) for k, v in args.items()}
        self.records.append(ToolCallRecord(name, shown, ok, content.splitlines()[0][:300] if content else ""))
        return ok, content

    def _list_connectors(self, args: dict[str, Any]) -> tuple[bool, str]:
        return True, json.dumps(spec_vocabulary())

    def _profile_tool(self, args: dict[str, Any]) -> tuple[bool, str]:
        path = args.get("path")
        if not isinstance(path, str) or not path.strip():
            return False, "profile_source needs a 'path' string"
        return self._profile(path.strip(), trusted=False)

    def _profile(self, argument: str, *, trusted: bool) -> tuple[bool, str]:
        source = source_from_argument(argument)
        profile = self._profile_of(source, trusted=trusted)
        return True, json.dumps(profile_for_model(profile))

    def _profile_of(self, source: Source, *, trusted: bool) -> SourceProfile:
        key = source_key(source)
        if key in self.profiles:
            return self.profiles[key]
        if not trusted:
            self._check_allowed(source)
        profile = profile_source(source, sample_rows=self.settings.agent_sample_rows)
        self.profiles[key] = profile
        return profile

    def _check_allowed(self, source: Source) -> None:
        """The model may only make us read files under the data roots; other sources only if the user
        named them (``source_hint``)."""
        path = getattr(source, "path", None)
        if source.type not in ("csv", "jsonl", "parquet") or not isinstance(path, str):
            raise AgentError(
                f"only files can be profiled on the model's request; "
                f"{source.type} sources must be given by the user"
            )
        roots = [r.expanduser().resolve() for r in self.settings.agent_data_roots]
        for file in resolve_files(path):
            if not any(file.resolve().is_relative_to(root) for root in roots):
                raise AgentError(f"{file} is outside the allowed data roots ({', '.join(map(str, roots))})")

    def _propose(self, args: dict[str, Any]) -> tuple[bool, str]:
        self.attempts += 1
        reasons, spec = self._review(args.get("spec_json", args.get("spec")))
        if spec is not None and not reasons:
            self.accepted = spec
            return True, "ACCEPTED"
        self.last_reasons = reasons
        left = self.settings.agent_max_repairs + 1 - self.attempts
        footer = f"Fix every reason and call propose_spec again ({left} attempt(s) left)." if left > 0 else ""
        return False, "REJECTED:\n- " + "\n- ".join(reasons) + ("\n" + footer if footer else "")

    def _review(self, raw: Any) -> tuple[list[str], PipelineSpec | None]:
        """Every reason the draft is not acceptable; the spec when it parsed."""
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                return [f"spec_json is not valid JSON: {exc}"], None
        try:
            spec = parse_spec(raw)
        except SpecError as exc:
            return [str(issue) for issue in exc.issues], None
        reasons: list[str] = []
        if self.destination is not None and spec.destination != self.destination:
            reasons.append(f"destination: must be exactly {json.dumps(compact_dump(self.destination))}")
        unknown_connector = check_connector(spec)
        if unknown_connector:
            return reasons + unknown_connector, spec
        try:
            profile = self._profile_of(spec.source, trusted=self._is_hint(spec.source))
        except AoetlError as exc:
            return [*reasons, f"source: cannot be profiled: {exc}"], spec
        grounding = check_grounding(spec, profile)
        if grounding:
            return reasons + grounding, spec
        try:
            report = dry_run(spec, profile.sample)
        except AoetlError as exc:
            return [*reasons, f"dry run on {profile.sampled_rows} sample rows: {exc}"], spec
        if not reasons:
            self.notes.append(
                f"dry run: {report.rows_in} sample rows in, {report.rows_out} out, "
                f"{report.rows_quarantined} quarantined"
            )
            self.notes.extend(report.violations)
        return reasons, spec

    def _is_hint(self, source: Source) -> bool:
        if not self.hint:
            return False
        try:
            return source_key(source_from_argument(self.hint)) == source_key(source)
        except AoetlError:
            return False
