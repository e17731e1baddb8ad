"""Replay a finished 4-D BOLD run into a folder as a scanner exports it, a file per volume at TR
pace (or ``speed`` times faster): ``fmri-edge simulate --scanner``. Lets anyone try ``fmri-edge
stream`` without a scanner; the tests use it.

Like a scanner or a network share, some volumes are written in place in two halves with a pause
between them (every ``split_every``-th volume), so a reader sees them incomplete first.

- ``nii``: 3-D NIfTI-1 files named ``img-<series:05>-<volume:05>.nii``;
- ``dicom``: Siemens XA enhanced multi-frame DICOM, one file per volume, named as ideacmdtool
  names its exports, ``001_<series:06>_<volume:06>.dcm`` (:mod:`fmri_edge.imaging.dicom`).

Volume numbers start at 1, as the scanner's do.

``motion`` (``--motion TRACE.tsv`` or ``--motion drift``, :mod:`fmri_edge.imaging.motion`) moves the head:
volume k is written as the scanner would see it with the head moved by row k of the trace (the
volume resampled, cubic B-spline), on the same grid and affine — a moving run with a known truth.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.errors import InputError, UsageError

FORMATS = ("nii", "dicom")


def volume_file(fmt: str, series: int, number: int) -> str:
    return (
        f"img-{series:05d}-{number:05d}.nii"
        if fmt == "nii"
        else f"001_{series:06d}_{number:06d}.dcm"
    )


def nifti_bytes(volume: np.ndarray, affine: np.ndarray, tr: float) -> bytes:
    """One 3-D volume as the bytes of a ``.nii`` file (float32)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    return img.to_bytes()


def write_in_place(path: Path, data: bytes, split: bool, pause: float) -> None:
    """Write ``data`` to ``path`` in place; with ``split``, the first half, a pause, then the rest."""
    with open(path, "wb") as f:
        if split:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause)
            f.write(data[half:])
        else:
            f.write(data)


def replay(
    bold: str | Path,
    folder: str | Path,
    tr: float,
    speed: float = 1.0,
    fmt: str = "nii",
    split_every: int = 3,
    series: int = 1,
    on_volume: Callable[[int, Path], None] | None = None,
    pause: float | None = None,
    motion: np.ndarray | None = None,
) -> int:
    """Write each volume of ``bold`` (4-D NIfTI) into ``folder`` at ``k · tr / speed`` seconds from
    the start; returns the number of volumes written. ``pause``: between the two halves of a volume
    written in pieces (default a quarter of the interval, at most 0.5 s)."""
    import nibabel as nib

    bold, folder = Path(bold), Path(folder)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if speed <= 0 or tr <= 0:
        raise UsageError("--tr and --speed take positive numbers")
    if not folder.is_dir():
        raise InputError(folder, "watch folder does not exist; create it first")
    try:
        img = nib.load(str(bold))
    except Exception as e:
        raise InputError(
            bold,
            f"not a readable NIfTI image ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})",
        ) from None
    if len(img.shape) != 4:
        raise InputError(
            bold, f"{len(img.shape)}-D image (shape {img.shape}); --from needs a 4-D run"
        )
    if fmt == "dicom":
        from fmri_edge.imaging import dicom

        encode = dicom.Encoder(img.affine, img.shape[:3], series)
    n = int(img.shape[3])
    if motion is not None:
        motion = np.asarray(motion, dtype=np.float64)
        if motion.ndim != 2 or motion.shape[1] != 6 or len(motion) < n:
            raise UsageError(
                f"--motion: the trace has {len(motion)} row(s) of {motion.shape[-1]} value(s); "
                f"{bold.name} needs {n} rows of 6 (trans_x … rot_z)"
            )
        from fmri_edge.imaging.motion import move_volume
    period = tr / speed
    pause = min(0.5, period / 4) if pause is None else pause
    start = time.monotonic()
    for k in range(n):
        volume = np.asanyarray(img.dataobj[..., k])
        if motion is not None and np.any(motion[k]):
            volume = move_volume(volume, img.affine, motion[k])
        data = nifti_bytes(volume, img.affine, tr) if fmt == "nii" else encode(volume, k + 1)
        delay = start + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        path = folder / volume_file(fmt, series, k + 1)
        write_in_place(path, data, split_every > 0 and k % split_every == split_every - 1, pause)
        if on_volume is not None:
            on_volume(k, path)
    return n
