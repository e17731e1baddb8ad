"""Writing output files: refuse to overwrite by accident (:func:`check_new`), and write atomically
(:func:`replace_atomically`: a temporary file in the same folder, renamed over the target when
complete), so an interrupted run leaves either the old file or a complete new one, and never a
temporary file behind."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fmri_edge.errors import InputError, UsageError


def check_new(path: str | Path, force: bool = False) -> Path:
    """Refuse an output path that exists (unless ``force``) or whose folder does not."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; give a file name for the output")
    if path.exists() and not force:
        raise InputError(path, "exists; use --force to overwrite")
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist; create it first")
    return path


def file_mode(path: Path) -> int:
    """The permissions a new file at ``path`` should get: the old file's, else the umask's (a
    temporary file from mkstemp is 0600, which would leave a submission unreadable to the lab)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextmanager
def replace_atomically(path: str | Path, binary: bool = False):
    """Open a temporary file beside ``path`` for writing (text with universal newlines off, or
    ``binary``); it replaces ``path`` only when the block completes. An exception or an interrupt
    (Ctrl-C) inside the block, or a failed rename, leaves the old file, if any, untouched and
    removes the temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as f:
            os.chmod(tmp, file_mode(path))
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- output names, checked before any work ----------------------------------------------------

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
        raise UsageError(
            f"{option} {path}: writes {what}; give a file name ending in {' or '.join(allowed)}"
        )
    return path


def check_writable(path: str | Path) -> Path:
    """A file that can be created at ``path``: its folder exists and may be written (checked at start,
    so a long run never fails at its first row)."""
    path = Path(path)
    parent = path.absolute().parent
    if not parent.is_dir():
        raise InputError(path, f"folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            path, f"cannot be written (folder {parent} is not writable); choose another file"
        )
    return path
