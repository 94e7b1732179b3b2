"""The CLI's rich consoles: as wide as the terminal on a terminal, and not cut at all when piped.

rich takes 80 columns when its output is not a terminal (or the width of whichever of stdin, stdout and
stderr is one), so ``aoetl dlq list | grep ...`` or a CI log got tables folded and lines wrapped at 80
columns. A ``CliConsole`` that writes to a pipe or a file is ``PIPED_WIDTH`` wide instead, so a line is as
long as its content; ``COLUMNS`` (or an explicit ``width``) still wins, as with rich itself.
"""

from __future__ import annotations

import os

from rich.console import Console, ConsoleDimensions

# wide enough that no line of ours wraps; rich pads nothing to this width (tables take what they need)
PIPED_WIDTH = 10_000


class CliConsole(Console):
    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is not None or self.is_terminal or (os.environ.get("COLUMNS") or "").isdigit():
            return size
        return ConsoleDimensions(PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
