"""One atlas refusal per study, not one per run (issue 30): an atlas that does not fit the runs'
grid (labels lost in resampling, no overlap) refuses every run of that grid with the same words;
:func:`collapse` keeps the first, says how many runs it refused, and hands back the repeats (still
written to ``--errors``). Standard library only."""

from __future__ import annotations

from pathlib import Path

from fmri_edge.errors import InputError


def _key(e: InputError, names: list[str]) -> str:
    text = e.problem
    for n in names:
        if n in text:
            text = text.replace(n, "<run>")
    return text


def collapse(
    problems: list[InputError], atlas_path: str | Path, run_names: list[str]
) -> tuple[list[InputError], list[InputError]]:
    """``(problems to print, repeats not printed)``."""
    atlas = str(atlas_path)
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    shown: list[InputError] = []
    repeated: list[InputError] = []
    for e in problems:
        if e.path != atlas or e.trial is not None:
            shown.append(e)
            continue
        k = _key(e, run_names)
        count[k] = count.get(k, 0) + 1
        if k in first:
            repeated.append(e)
        else:
            first[k] = len(shown)
            shown.append(e)
    for k, i in first.items():
        if count[k] > 1:
            e = shown[i]
            shown[i] = InputError(
                e.path,
                f"{e.problem} (the same for all {count[k]} runs on this grid: refused once)",
                e.trial,
                e.outcome,
            )
    return shown, repeated
