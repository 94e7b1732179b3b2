"""The orchestrator's self-healing: only the orchestrator heals runs, so it lives in its package.

* ``policy``: what went wrong (``classify``) and what to do within the ``HealingPolicy`` (``decide``);
* ``remedies``: the spec change of each spec-changing remedy (``apply_remedy``), validated by ``parse_spec``;
* ``healer``: ``Healer``, the decision the run fold (``runs.RunBook``) asks for when a task fails.

Profiling constants and spec dumping come from the agent library (``shared.agent``).
"""
