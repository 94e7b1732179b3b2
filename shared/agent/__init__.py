"""The agent as a library: deterministic profiling and spec suggestions, dry runs, grounded LLM planning.

The CLI (``aoetl agent``) and the orchestrator (intent requests) both use it, which is why it lives in the
common library; the self-healing policy, which only the orchestrator applies, is in
``services.orchestrator.healing``.

Everything the agent produces is data: a ``PipelineSpec`` validated by ``parse_spec``, grounded in the
source profile and dry-run on a sample. It never executes generated code; SQL inside a drafted spec only
ever runs inside the transform engine's sandboxed DuckDB, on sample rows.

Public entry points (import from the modules, which keeps ``import shared.agent`` cheap):

* ``profile.profile_source`` / ``profile.profile_table`` -> ``SourceProfile`` (type inference in
  ``inference``, PII detection in ``pii``)
* ``suggest.suggest_spec`` -> ``Suggestion``; ``suggest.parse_destination_uri``; ``suggest.dry_run``
* ``planner.IntentPlanner(...).plan(intent)`` -> ``PlanOutcome`` (the model's tools in ``tools``)
"""
