"""What every command shares: the Typer app, the two consoles, user-facing errors and exit codes.

Imports here are only typer and the standard library: rich is loaded only when a command prints to
a terminal (:mod:`fmri_edge.cli.console`), and numpy/onnxruntime by the commands that use them, so
``fmri-edge --help`` starts in about the time of ``import typer`` (docs/speed.md). Annotations are
real objects, not strings (no ``from __future__ import annotations``): typer would otherwise
``eval`` each of them on every start.
"""

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from fmri_edge import __version__
from fmri_edge.cli.console import Table, err, escape, out  # noqa: F401  (re-exported for the commands)
from fmri_edge.errors import InputError, UsageError

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = (
    3  # predict --out: some files or trials were refused or skipped (their rows are missing)
)
MAX_TABLE_ROWS = 60


class SectionedGroup(TyperGroup):
    """Plain (click) help with the commands listed under their section (``rich_help_panel``):
    the runtime commands apart from the torch-side ones. Typer's Rich help would import
    rich.markdown, markdown-it and pygments on every ``--help`` (their cost: docs/speed.md)."""

    def format_commands(self, ctx, formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        commands = [(n, self.get_command(ctx, n)) for n in self.list_commands(ctx)]
        commands = [(n, c) for n, c in commands if c is not None and not c.hidden]
        if not commands:
            return
        limit = formatter.width - 6 - max(len(n) for n, _ in commands)
        for name, cmd in commands:
            sections.setdefault(getattr(cmd, "rich_help_panel", None) or "Commands", []).append(
                (name, cmd.get_short_help_str(limit))
            )
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=SectionedGroup,
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Decode emotional valence (CLASS -1/0/+1, LEVEL -4…4) from region-wise fMRI trials, "
    "on CPU with ONNX Runtime.",
)


_state = {"debug": False}
NoVerify = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Open a model even if its weights digest disagrees with "
        "its metadata (for models edited on purpose).",
    ),
]


def _version(value: bool):
    if value:
        print(f"fmri-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        Optional[bool],
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
):
    """Decode emotional valence (CLASS -1/0/+1, LEVEL -4…4) from region-wise fMRI trials, on CPU
    with ONNX Runtime. The runtime needs numpy and onnxruntime only; train, export and bench need
    the torch side (pip install 'fmri-edge[train]')."""
    _state["debug"] = debug


@contextmanager
def user_errors():
    """Turn expected problems into one red line on stderr and exit code 2 (traceback with --debug)."""
    try:
        yield
    except (InputError, UsageError, FileNotFoundError) as e:
        if _state["debug"]:
            raise
        err.print(
            f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True
        )  # text, not markup
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        err.print("[red]interrupted:[/] output files are either unchanged or not created")
        raise typer.Exit(130) from None


def report_problems(
    problems: list[InputError],
    errors_json: Path | None,
    unprinted: list[InputError] = (),
    force: bool = False,
) -> None:
    """Print each problem with its outcome (refused, skipped, repaired, predicted); write all of
    them to ``errors_json`` (atomically) if given."""
    from fmri_edge.data.submission import atomic_write

    for p in problems:
        err.print(f"[yellow]{p.outcome}:[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    if errors_json is not None:
        with atomic_write(errors_json, force) as f:
            json.dump([p.as_dict() for p in [*problems, *unprinted]], f, indent=1)
