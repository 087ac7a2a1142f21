"""Tables whose every cell stays on one line.

On a terminal a table that is too wide cuts its least important columns first (with
"…"); rich alone would wrap every cell into a column a few characters wide, so an image
name or a rollout id came out over five lines. Printed anywhere else (a pipe, a file) it
is plain text in aligned columns, as kubectl prints, with nothing cut: `grep` and `awk`
see one host or rollout per line, and ``-o json`` has every field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

KEPT_WIDTH = 8
"""A cut column still shows this many characters (an id, a name's start)."""
UNBOUNDED = 10_000
GAP = "   "


class OneLineTable(Table):
    """A rich table of text cells that never wrap; ``cut_first`` names the columns that
    give way, least important first, when the console is too narrow."""

    def __init__(self, *headers: str, title: str | None = None, cut_first: Sequence[str] = ()):
        super().__init__(title=title, title_justify="left")
        for header in headers:
            self.add_column(header, no_wrap=True, overflow="ellipsis")
        self.cut_first = [headers.index(header) for header in cut_first]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._fit(console, options)
        yield from super().__rich_console__(console, options)

    def _fit(self, console: Console, options: ConsoleOptions) -> None:
        """Give each column in ``cut_first`` a maximum width until the table fits."""
        for column in self.columns:
            column.max_width = None
        wide = options.update_width(UNBOUNDED)
        excess = Measurement.get(console, wide, self).maximum - options.max_width
        for index in self.cut_first:
            if excess <= 0:
                return
            column = self.columns[index]
            natural = max(
                Measurement.get(console, wide, cell).maximum
                for cell in (column.header, *column.cells)
            )
            kept = max(KEPT_WIDTH, natural - excess)
            if kept < natural:
                column.max_width = kept
                excess -= natural - kept
        # Still too wide: rich narrows every column, and each cell still ends in "…".


def plain_lines(table: Table, console: Console) -> list[str]:
    """The table as kubectl prints one: upper-case headers, aligned columns, no cuts."""
    columns: list[list[str]] = [
        [str(column.header).upper(), *(_plain(cell, console) for cell in column.cells)]
        for column in table.columns
    ]
    widths = [max(cell_len(cell) for cell in column) for column in columns]
    return [
        GAP.join(
            cell + " " * (width - cell_len(cell)) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in zip(*columns, strict=True)
    ]


def _plain(cell: RenderableType, console: Console) -> str:
    text = cell if isinstance(cell, Text) else console.render_str(str(cell))
    return " ".join(text.plain.split("\n"))


def print_table(table: Table, console: Console | None = None) -> None:
    """The rich table on a terminal, plain aligned lines anywhere else."""
    console = console or Console()
    if console.is_terminal:
        console.print(table)
    else:
        print_lines(plain_lines(table, console), console)


def print_lines(lines: Iterable[str], console: Console) -> None:
    """Lines as they are: no markup, no wrapping at the console's width."""
    for line in lines:
        console.out(line, highlight=False)
