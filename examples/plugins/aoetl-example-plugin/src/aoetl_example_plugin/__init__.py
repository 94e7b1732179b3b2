"""An example aoetl plugin: one source (``example_rows``), one transform step (``uppercase``) and one
destination (``jsonl_runs``), registered as entry points in its ``pyproject.toml``."""
