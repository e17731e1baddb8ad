"""Output names checked against what is written, before any work (issue 30): ``explain --brain-map
x.nii.gz`` would fail in matplotlib after all the computing, ``--map-nifti x.png`` would write a
NIfTI named ``.png``. Standard library only (the CLI imports it before numpy)."""
from __future__ import annotations

from pathlib import Path

from fmri_edge.errors import UsageError

SUFFIXES = {
    "--plot": ((".png",), "a PNG figure"),
    "--brain-map": ((".png",), "a PNG figure (the NIfTI map is --map-nifti)"),
    "--map-nifti": ((".nii", ".nii.gz"), "a NIfTI image (the figure is --brain-map)"),
    "--out-nifti": ((".nii", ".nii.gz"), "a NIfTI image"),
}


def check_suffix(path: str | Path, option: str) -> Path:
    """``path`` ends the way ``option`` writes (see :data:`SUFFIXES`), or one line saying so."""
    path = Path(path)
    allowed, what = SUFFIXES[option]
    if not any(path.name.lower().endswith(s) and len(path.name) > len(s) for s in allowed):
        raise UsageError(f"{option} {path}: writes {what}; give a file name ending in {' or '.join(allowed)}")
    return path


def check_writable(path: str | Path) -> Path:
    """A file that can be created at ``path``: its folder exists and may be written (checked at start,
    so a long run never fails at its first row)."""
    import os

    from fmri_edge.errors import InputError

    path = Path(path)
    parent = path.absolute().parent
    if not parent.is_dir():
        raise InputError(path, f"folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot be written (folder {parent} is not writable); choose another file")
    return path
