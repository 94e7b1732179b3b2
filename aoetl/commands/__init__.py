"""Sub-command groups of the ``aoetl`` CLI; each module exposes ``app`` (a ``typer.Typer``)."""
