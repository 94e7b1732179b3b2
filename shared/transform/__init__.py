"""The data plane's transform step as a library: the vectorized engine (``engine``) with its casting and
sandboxed-SQL rules (``casting``, ``expressions``), the quality rules (``quality``) and their errors.

The transform service runs it on every batch; the orchestrator checks run-level rules with it and the
agent dry-runs drafted specs on sample rows with it, so all three apply exactly the same semantics.
Import from the modules (``shared.transform.engine``...): this package imports nothing by itself.
"""
