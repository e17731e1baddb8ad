"""A training run folder is whole (issue 30): every file of one run, or every file of the other.

:func:`staged` gives a temporary folder beside ``--out`` (same file system, so the final move is a
rename); the run writes into it and it replaces ``--out`` only when the run completes. An
interrupt (Ctrl-C during ``--permutations``), an error or a full disk leave the earlier run
untouched and remove the temporary folder. :func:`check_out` refuses, before any work, an
``--out`` that cannot be written or that is not a run folder (it would be replaced whole)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fmri_edge.errors import InputError

RUN_FILES = ("results.json", "model.pt", "cv_predictions.csv", "cv_folds.csv", "fold0.pt")


def check_out(out_dir: str | Path) -> Path:
    """``out_dir`` may become a run folder: a new folder whose parent can be written, or an earlier run."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "is a file; give --out a folder for the run")
    if (
        out_dir.is_dir()
        and any(out_dir.iterdir())
        and not any((out_dir / f).exists() for f in RUN_FILES)
    ):
        raise InputError(
            out_dir,
            "holds files but is not a run folder of fmri-edge train (no results.json, "
            "model.pt); the run would replace it whole: give --out a new folder",
        )
    parent = out_dir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            out_dir, f"cannot be created ({e.strerror or type(e).__name__}); choose another --out"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            out_dir, f"cannot be written (folder {parent} is not writable); choose another --out"
        )
    return out_dir


@contextmanager
def staged(out_dir: str | Path):
    """Yield a temporary folder beside ``out_dir`` that replaces it when the block completes."""
    out_dir = check_out(out_dir)
    parent = out_dir.absolute().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise InputError(
            out_dir, f"cannot be written ({e.strerror or type(e).__name__}); choose another --out"
        ) from None
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 would hide the run from the lab
    try:
        yield tmp
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=parent))
            os.replace(out_dir, old / "run")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / "run", out_dir)  # put the earlier run back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
