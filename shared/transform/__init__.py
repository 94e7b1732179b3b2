"""The data plane's transform step as a library: the vectorized engine (``engine``) with its casting and
sandboxed-SQL rules (``casting``, ``expressions``), the quality rules (``quality``) and their errors, and the
stage on one batch (``batches``).

The transform stage runs it on every batch (in extract, which chains it to its reads by default, or in the
transform service); the orchestrator checks run-level rules with it and the
agent dry-runs drafted specs on sample rows with it, so all three apply exactly the same semantics.
Import from the modules (``shared.transform.engine``...): this package imports nothing by itself.
"""
