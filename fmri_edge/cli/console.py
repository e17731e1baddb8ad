"""The two consoles (``out`` for results, ``err`` for everything else) and the tables commands print.

On a terminal they are rich's: colour, boxed tables. Anywhere else (a pipe, a file, a batch job,
a test runner) they write plain text: markup tags dropped, tables as aligned columns, lines never
wrapped. Plain output needs nothing but the standard library, so a scripted ``fmri-edge predict``
does not pay for importing rich and laying out its table (its share of a cold start:
docs/speed.md). ``FORCE_COLOR`` set in the environment gives rich's output everywhere.
"""

import os
import re
import sys

# rich's markup tags ([red], [/], [bold yellow] …), with the backslashes that may escape them
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")
_ESCAPE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """Text shown as it is inside markup (rich.markup.escape, without importing rich)."""
    text = _ESCAPE.sub(lambda m: f"{m.group(1)}{m.group(1)}\\{m.group(2)}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def plain(markup: str) -> str:
    """Markup as the text rich would show: tags dropped, escaped brackets kept."""

    def tag(m: re.Match) -> str:
        backslashes, escaped = divmod(len(m.group(1)), 2)
        return "\\" * backslashes + (f"[{m.group(2)}]" if escaped else "")

    return _TAG.sub(tag, markup)


class Table:
    """A table: rich.table.Table's constructor, ``add_column`` and ``add_row`` (the part commands use),
    drawn by rich on a terminal and as aligned plain columns elsewhere."""

    def __init__(
        self,
        title: str | None = None,
        caption: str | None = None,
        show_header: bool = True,
        **kwargs,
    ):
        self.title, self.caption, self.show_header, self.kwargs = (
            title,
            caption,
            show_header,
            kwargs,
        )
        self.columns: list[tuple[str, dict]] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, header: str = "", **kwargs) -> None:
        self.columns.append((header, kwargs))

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def to_rich(self):
        from rich.table import Table as RichTable

        t = RichTable(
            title=self.title, caption=self.caption, show_header=self.show_header, **self.kwargs
        )
        for header, kwargs in self.columns:
            t.add_column(header, **kwargs)
        for row in self.rows:
            t.add_row(*row)
        return t

    def to_text(self) -> str:
        cells = [[plain(str(c)).replace("\n", " ") for c in row] for row in self.rows]
        if self.show_header:
            cells.insert(0, [plain(h) for h, _ in self.columns])
        widths = [
            max((len(r[i]) for r in cells if i < len(r)), default=0)
            for i in range(len(self.columns))
        ]
        right = [kw.get("justify") == "right" for _, kw in self.columns]
        lines = [plain(self.title)] if self.title else []
        lines += [
            "  ".join(
                c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)
            ).rstrip()
            for row in cells
        ]
        if self.caption:
            lines.append(plain(self.caption))
        return "\n".join(lines)


def is_terminal(stream) -> bool:
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class Console:
    """``print`` writes plain text unless the stream is a terminal; anything else (``status``,
    progress bars, rich renderables) goes to a rich Console, created on first use."""

    def __init__(self, stderr: bool = False):
        self.stderr, self._rich = stderr, None

    @property
    def stream(self):
        return sys.stderr if self.stderr else sys.stdout

    @property
    def rich(self):
        if self._rich is None:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=self.stderr)
        return self._rich

    def print(self, *objects, **kwargs) -> None:
        if not is_terminal(self.stream) and all(isinstance(o, (str, Table)) for o in objects):
            text = " ".join(o.to_text() if isinstance(o, Table) else plain(o) for o in objects)
            if any(isinstance(o, Table) for o in objects):
                text += "\n"  # a blank line after a table: rich's borders separate tables, plain text needs this
            print(text, file=self.stream, flush=self.stderr)
            return
        self.rich.print(*(o.to_rich() if isinstance(o, Table) else o for o in objects), **kwargs)

    def __getattr__(self, name):
        return getattr(self.rich, name)


err = Console(stderr=True)
out = Console()
