"""The CLI's rich consoles: as wide as the terminal on a terminal, and not cut at all when piped.

rich takes 80 columns when its output is not a terminal (or the width of whichever of stdin, stdout and
stderr is one), so ``aoetl dlq list | grep ...`` or a CI log got tables folded and lines wrapped at 80
columns. A ``CliConsole`` that writes to a pipe or a file is ``PIPED_WIDTH`` wide instead, so a line is as
long as its content; ``COLUMNS`` (or an explicit ``width``) still wins, as with rich itself.

``OutputOption`` and ``emit`` are the one ``-o table|json|yaml`` of the read commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions, RenderableType

# wide enough that no line of ours wraps; rich pads nothing to this width (tables take what they need)
PIPED_WIDTH = 10_000


class CliConsole(Console):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None:  # rich fixed COLUMNS of import time here: ``size`` reads it live
            self._width = None

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is not None or self.is_terminal:
            return size
        # COLUMNS read now, not when the console was made: the commands' consoles are module-level, made
        # at import time under whatever environment that was (rich reads COLUMNS only in __init__)
        columns = os.environ.get("COLUMNS") or ""
        return ConsoleDimensions(int(columns) if columns.isdigit() else PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


# the one `-o` option of the read commands; json and yaml are one document (a list for a listing), plain
# text never wrapped, so `| jq` and `| yq` read it whatever the width
OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table (default), json or yaml", case_sensitive=False)
]


def emit(
    output: OutputFormat,
    document: Any,
    table: Callable[[], RenderableType] | None = None,
    console: Console | None = None,
) -> None:
    """Print ``document`` (JSON-ready: dicts, lists, strings, numbers) as JSON or YAML, or ``table()`` (built
    only when shown) on ``console``; a command whose table is its own display passes no ``table``."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(document, indent=2, default=str))
    elif output is OutputFormat.YAML:
        import yaml  # only for -o yaml (cold start, see aoetl.cli)

        typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)
    elif table is not None:
        (console or CliConsole()).print(table())
