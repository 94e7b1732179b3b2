"""The agent: deterministic profiling and spec suggestions, grounded LLM planning, self-healing policy.

Everything the agent produces is data: a ``PipelineSpec`` (validated by ``parse_spec``, grounded in the
source profile, dry-run on a sample) or a ``Remedy`` from a fixed list. It never executes generated code;
SQL inside a drafted spec only ever runs inside the transform engine's sandboxed DuckDB, on sample rows.

Public entry points (import from the modules, which keeps ``import services.orchestrator.agent`` cheap):

* ``profile.profile_source`` / ``profile.profile_table`` -> ``SourceProfile``
* ``suggest.suggest_spec`` -> ``Suggestion``; ``suggest.parse_destination_uri``; ``suggest.dry_run``
* ``planner.Planner(...).plan(intent)`` -> ``PlanOutcome``
* ``policy.classify`` / ``policy.decide`` / ``healing.apply_remedy``
"""
