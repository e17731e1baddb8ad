"""Finding a BIDS study's preprocessed runs: fMRIPrep-named BOLD images, each run's events and
confounds, in run order (globbing, as nilearn does; no pybids index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fmri_edge.errors import InputError, UsageError
from fmri_edge.imaging.events import entities, find_events


@dataclass
class BidsRun:
    participant: str  # "sub-01"
    bold: Path
    events: Path | None  # None: not found (the run is reported, the others go on)
    confounds: Path | None
    searched: list[Path] = field(default_factory=list)
    duplicate_of: Path | None = (
        None  # the same run also as .nii.gz: this copy is not read (reported)
    )

    @property
    def sort_key(self):
        e = entities(self.bold.name)
        run = e.get("run", "0")
        return (
            e.get("ses", ""),
            e.get("task", ""),
            int(run) if run.isdigit() else 0,
            run,
            self.bold.name,
        )


def events_name(bold: Path) -> str:
    return stem(bold.name) + "_events.tsv"


def stem(name: str) -> str:
    e = entities(name)
    return "_".join(
        f"{k}-{e[k]}" for k in ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run") if k in e
    )


def confounds_beside(bold: str | Path) -> Path:
    """fMRIPrep's confounds file for a preprocessed BOLD: ``<sub…run>_desc-confounds_timeseries.tsv``."""
    bold = Path(bold)
    return bold.parent / f"{stem(bold.name)}_desc-confounds_timeseries.tsv"


def find_bids_runs(
    root: str | Path, task: str | None = None, space: str | None = None, confounds: bool = False
) -> dict[str, list[BidsRun]]:
    """fMRIPrep-named preprocessed runs under ``root`` (``sub-*/[ses-*/]func/*_desc-preproc_bold.nii[.gz]``,
    at any depth, e.g. in derivatives/fmriprep) → {participant: runs in order}. Run order: session,
    task, then run number (as a number), then file name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    bolds = sorted(
        p
        for pattern in ("*_desc-preproc_bold.nii.gz", "*_desc-preproc_bold.nii")
        for p in root.rglob(pattern)
        if p.parent.name == "func" and p.name.startswith("sub-")
    )
    if task:
        bolds = [b for b in bolds if entities(b.name).get("task") == task]
    spaces = sorted({entities(b.name).get("space", "(none)") for b in bolds})
    if space:
        bolds = [b for b in bolds if entities(b.name).get("space") == space]
    elif len(spaces) > 1:
        raise UsageError(
            f"{root}: preprocessed BOLD in several spaces ({', '.join(spaces)}); choose one with "
            "--space (the atlas's space, e.g. MNI152NLin2009cAsym)"
        )
    if not bolds:
        what = " and ".join(
            x for x in (f"task {task!r}" if task else "", f"space {space!r}" if space else "") if x
        )
        raise InputError(
            root,
            "no preprocessed BOLD found (fMRIPrep naming: sub-*/(ses-*/)func/"
            f"*_desc-preproc_bold.nii.gz){' for ' + what if what else ''}"
            + (f"; spaces present: {', '.join(spaces)}" if space and spaces else ""),
        )
    out: dict[str, list[BidsRun]] = {}
    for b in bolds:
        ev, searched = find_events(b, root)
        conf = confounds_beside(b) if confounds else None
        twin = b.with_name(b.name + ".gz") if b.name.endswith(".nii") else None
        out.setdefault(f"sub-{entities(b.name)['sub']}", []).append(
            BidsRun(
                f"sub-{entities(b.name)['sub']}",
                b,
                ev,
                conf,
                searched,
                twin if twin in bolds else None,
            )
        )
    for runs in out.values():
        runs.sort(key=lambda r: r.sort_key)
    return dict(sorted(out.items()))
