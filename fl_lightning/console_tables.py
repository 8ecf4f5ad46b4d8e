"""Rich tables printed whole: at a terminal they fit its width; into a file or a pipe nothing is cut."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

#: the widest a table is laid out when the output is not a terminal (wider lines would still be whole)
MAX_FILE_WIDTH = 1000


def print_whole(console: "Console", renderable: "RenderableType") -> None:
    """Print ``renderable`` on ``console``; when the output is not a terminal (a file, a pipe, a CI log), at the
    renderable's natural width instead of rich's default 80 columns, which would wrap or cut its cells."""
    from rich.console import Console
    from rich.measure import Measurement

    if console.is_terminal:
        console.print(renderable)
        return
    wide = console.options.update_width(MAX_FILE_WIDTH)
    width = max(console.width, Measurement.get(console, wide, renderable).maximum)
    if width == console.width:
        console.print(renderable)
        return
    Console(file=console.file, width=width, color_system=console.color_system and "auto",
            force_terminal=False, highlight=False).print(renderable)
