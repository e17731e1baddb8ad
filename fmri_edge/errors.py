"""The two user-facing errors, in a module of their own so that anything may raise or catch them
without importing numpy (the CLI's ``--help`` path imports this and typer only).

Both become one line on stderr and exit code 2 in the CLI (``fmri_edge.cli.common.user_errors``).
"""

from __future__ import annotations

from pathlib import Path


class UsageError(ValueError):
    """A user-facing problem with how a command was asked (options, recipes): one line, exit 2."""


class InputError(ValueError):
    """A user-facing problem with an input file: one line, names the file (and trial, 1-based).

    ``outcome`` says what became of it: ``refused`` (the whole file), ``skipped`` (one trial, the
    others are predicted), ``repaired`` (a trial predicted after ``--nan interpolate``) or
    ``predicted`` (a warning: the trial is suspicious but was predicted) or ``ignored`` (a folder
    or file deliberately not read, e.g. a symlink loop; no trial of it is lost).

    Examples
    --------
    >>> e = InputError("sub-01/run1.npy", "trial holds NaN values", trial=3, outcome="skipped")
    >>> str(e)
    'sub-01/run1.npy: trial 3: trial holds NaN values'
    >>> e.as_dict()["outcome"]
    'skipped'
    """

    def __init__(
        self, path: str | Path, problem: str, trial: int | None = None, outcome: str = "refused"
    ):
        self.path, self.problem, self.trial, self.outcome = str(path), problem, trial, outcome
        where = f"{path}: trial {trial}" if trial is not None else str(path)
        super().__init__(f"{where}: {problem}")

    def __reduce__(
        self,
    ):  # pickled as its fields (multiprocessing, Dask workers), not as its message
        return type(self), (self.path, self.problem, self.trial, self.outcome)

    def as_dict(self) -> dict:
        """The machine-readable form written by ``predict --errors`` and ``--json``."""
        return {
            "file": self.path,
            "trial": self.trial,
            "outcome": self.outcome,
            "problem": self.problem,
        }
