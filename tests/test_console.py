"""The consoles: plain text off a terminal (as rich would show it, without rich), rich on one."""

import io
import subprocess
import sys

import pytest
from rich.markup import escape as rich_escape
from rich.text import Text

from fmri_edge.cli import console
from fmri_edge.cli.console import Console, Table, escape, plain

MARKUPS = [
    "[red]error:[/] /data/P01/fMRI_data.npz: bad",
    "[yellow]skipped:[/] trial 3 [of 30]",
    "[bold red]x[/bold red] y",
    "no tags at all",
    "a [b] c",
]
TEXTS = ["file [red].npy", "P01 [trial 3]", "a\\[b]", "ends with a backslash\\", "[/]", "[link=x]y"]


@pytest.mark.parametrize("markup", MARKUPS)
def test_plain_shows_what_rich_shows(markup):
    assert plain(markup) == Text.from_markup(markup).plain


@pytest.mark.parametrize("text", TEXTS)
def test_escape_is_richs_and_plain_undoes_it(text):
    assert escape(text) == rich_escape(text)
    assert (
        plain(f"[red]error:[/] {escape(text)}")
        == Text.from_markup(f"[red]error:[/] {rich_escape(text)}").plain
    )
    if not text.endswith("\\"):
        assert plain(escape(text)) == text


def _table() -> Table:
    t = Table(title="[bold]scores[/]", caption="… 2 more rows")
    t.add_column("Participant", justify="left")
    t.add_column("CLASS", justify="right")
    t.add_row("P01", "+1")
    t.add_row("P17_long_name", "[red]-1[/]")
    return t


def test_plain_table_aligns_columns_and_keeps_title_and_caption():
    lines = _table().to_text().splitlines()
    assert lines == [
        "scores",
        "Participant    CLASS",
        "P01               +1",
        "P17_long_name     -1",
        "… 2 more rows",
    ]


def test_headerless_table_has_rows_only():
    t = Table(show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("input", "trials")
    assert t.to_text() == "input  trials"


def test_off_a_terminal_print_is_plain_and_loads_no_rich(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    c = Console()
    c.print(_table())
    c.print("[green]done[/]", highlight=False)
    assert buf.getvalue().splitlines()[-1] == "done"
    assert c._rich is None
    code = (
        "import sys; from fmri_edge.cli.console import out, Table; t = Table(title='x'); t.add_column('a'); "
        "t.add_row('1'); out.print(t); out.print('[red]y[/]'); print('rich' in sys.modules, file=sys.stderr)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""}
    )
    assert r.stdout == "x\na\n1\n\ny\n" and r.stderr.strip() == "False"


def test_force_color_gives_richs_table(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setenv("FORCE_COLOR", "1")
    c = Console()
    c.print(_table())
    assert "┃" in buf.getvalue() or "│" in buf.getvalue()  # rich's box drawing
    assert console.is_terminal(buf)
