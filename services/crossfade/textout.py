"""Tables and text for people that read anywhere.

On a terminal: rich tables that never cut a value to ``publ…``: short values (counts, LSNs,
times) keep their width, names wrap when the terminal is too narrow. Piped or redirected (a file,
``less``, ``grep``, a CI log): plain aligned text, no box drawing, no colour, no width limit, so
every name arrives whole whatever the terminal that ran it. Every command that prints a table
(status, verify, audit, dry-run, the demo) goes through :class:`Grid`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.box import HEAVY_HEAD, Box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

PLAIN_WIDTH = 10_000
"""Width of the plain console: wide enough that no line is ever wrapped or cut."""
_KEEP_WHOLE = 24
"""Cells up to this many characters (counts, LSNs, times, states) are never wrapped."""

# columns two spaces apart, a dashed line under the header: ASCII only
_PLAIN_BOX = Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def console(*, stderr: bool = False, force_plain: bool | None = None) -> Console:
    """A console for stdout (or stderr): rich on a terminal, plain text otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    plain = not stream.isatty() if force_plain is None else force_plain
    if plain:
        return Console(
            file=stream,
            width=PLAIN_WIDTH,
            no_color=True,
            color_system=None,
            highlight=False,
            emoji=False,
            soft_wrap=True,
        )
    return Console(file=stream)


def is_plain(con: Console) -> bool:
    """Whether ``con`` writes plain text (not a terminal, or made by :func:`console` as plain)."""
    return con.width >= PLAIN_WIDTH or not con.is_terminal


class Grid:
    """Rows under named columns, printed as a rich table or as plain aligned text.

    ``columns``: each a name, or ``(name, "right")`` for a right-aligned column. Cells are
    strings and may carry rich markup (``[red]NO[/]``: colour on a terminal, plain text else).
    """

    def __init__(
        self,
        columns: Sequence[str | tuple[str, str]],
        *,
        title: str | None = None,
        caption: str | None = None,
    ) -> None:
        self.columns = [(c, "left") if isinstance(c, str) else c for c in columns]
        self.title = title
        self.caption = caption
        self.rows: list[list[str]] = []

    def add_row(self, *cells: object) -> None:
        row = ["" if c is None else str(c) for c in cells]
        self.rows.append(row + [""] * (len(self.columns) - len(row)))

    def renderable(self, con: Console) -> RenderableType:
        """What ``con`` should print: plain aligned text when piped; on a terminal a table, or,
        when its short values cannot stay whole in the terminal's width, one block per row."""
        if is_plain(con):
            return self._plain()
        t = self._terminal()
        if sum(c.min_width or 0 for c in t.columns) + 3 * len(self.columns) + 1 <= con.width:
            return t
        return self._records(con.width)

    def print(self, con: Console) -> None:
        if not is_plain(con):
            con.print(self.renderable(con))
            return
        with con.capture() as cap:
            con.print(self._plain())
        # no padding after the last column: a file or a diff holds only what is there
        con.file.write("\n".join(line.rstrip() for line in cap.get().splitlines()) + "\n\n")

    def _plain(self) -> Table:
        t = Table(
            title=self.title,
            caption=self.caption,
            box=_PLAIN_BOX,
            show_edge=False,
            pad_edge=False,
            title_justify="left",
            caption_justify="left",
            title_style="",
            caption_style="",
            header_style="",
        )
        for name, justify in self.columns:
            t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for r in self.rows:
            t.add_row(*r)
        return t

    def _terminal(self) -> Table:
        t = Table(title=self.title, caption=self.caption, box=HEAVY_HEAD)
        for i, (name, justify) in enumerate(self.columns):
            word = max((len(w) for w in name.split()), default=1)
            cells = [Text.from_markup(r[i]).cell_len for r in self.rows]
            short = max((n for n in cells if n <= _KEEP_WHOLE), default=0)
            t.add_column(
                name,
                justify=justify,  # type: ignore[arg-type]
                overflow="fold",
                min_width=max(word, short),
            )
        for r in self.rows:
            t.add_row(*r)
        return t

    def _records(self, width: int) -> RenderableType:
        """Each row as its first cell on a line, then ``column value`` pairs packed into lines."""
        out: list[RenderableType] = []
        if self.title:
            out.append(Text(self.title, style="bold"))
        for r in self.rows:
            out.append(Text.from_markup(r[0], style="bold", overflow="fold"))
            lines: list[Text] = []
            line = Text("  ")
            for (name, _), cell in zip(self.columns[1:], r[1:], strict=True):
                if not cell:
                    continue
                pair = Text.assemble((name, "dim"), " ", Text.from_markup(cell))
                if line.cell_len > 2 and line.cell_len + 3 + pair.cell_len > width:
                    lines.append(line)
                    line = Text("  ")
                if line.cell_len > 2:
                    line.append("   ")
                line.append_text(pair)
            lines.append(line)
            out.extend(lines)
        if self.caption:
            out.append(Text(self.caption, style="dim"))
        return Group(*out)


__all__ = ["Grid", "console", "is_plain"]
