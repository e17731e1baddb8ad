"""Head motion the way the field reads it: six parameters per volume with fMRIPrep's column names,
framewise displacement (Power et al. 2012), the ``--motion-out`` table, and motion traces to replay.

- ``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (radians): SPM's parameters of
  the volume's rigid transform relative to the reference (:func:`spm_params`);
- ``framewise_displacement`` (mm): Σ |Δ trans| + 50 mm · Σ |Δ rot| against the previous volume
  (0 for the first volume that has one), Power et al. 2012, as fMRIPrep computes it.

Traces for ``fmri-edge simulate --scanner --motion`` (:func:`read_trace`, :func:`drift_trace`): the
same six columns, one row per volume; :func:`move_volume` puts a volume where a trace says.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError

COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
FD_RADIUS_MM = 50.0
FD_THRESHOLD = 0.5
TRACES = ("drift",)


# ---- SPM's rigid parameters ---------------------------------------------------------------------


def spm_matrix(p) -> np.ndarray:
    """SPM's rigid matrix from (tx, ty, tz, rx, ry, rz): ``T · Rx · Ry · Rz`` (its sign conventions)."""
    tx, ty, tz, a, b, c = (float(v) for v in p)
    t = np.eye(4)
    t[:3, 3] = tx, ty, tz
    rx = np.array(
        [[1, 0, 0, 0], [0, np.cos(a), np.sin(a), 0], [0, -np.sin(a), np.cos(a), 0], [0, 0, 0, 1]]
    )
    ry = np.array(
        [[np.cos(b), 0, np.sin(b), 0], [0, 1, 0, 0], [-np.sin(b), 0, np.cos(b), 0], [0, 0, 0, 1]]
    )
    rz = np.array(
        [[np.cos(c), np.sin(c), 0, 0], [-np.sin(c), np.cos(c), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    return t @ rx @ ry @ rz


def spm_params(m: np.ndarray) -> np.ndarray:
    """The inverse of :func:`spm_matrix` for a rigid matrix (SPM's ``spm_imatrix``, no zoom or shear)."""
    r = np.asarray(m, dtype=np.float64)[:3, :3]
    b = np.arcsin(np.clip(r[0, 2], -1, 1))
    cb = np.cos(b)
    if abs(cb) < 1e-9:
        a, c = 0.0, np.arctan2(-r[1, 0], -r[2, 0] / r[0, 2])
    else:
        a, c = np.arctan2(r[1, 2] / cb, r[2, 2] / cb), np.arctan2(r[0, 1] / cb, r[0, 0] / cb)
    return np.array([m[0, 3], m[1, 3], m[2, 3], a, b, c], dtype=np.float64)


# ---- framewise displacement and the motion table -----------------------------------------------


def framewise_displacement(params: np.ndarray, previous: np.ndarray | None) -> float:
    """Power 2012 FD of one volume's six parameters against the previous volume's (0 without one)."""
    if previous is None:
        return 0.0
    d = np.abs(np.asarray(params, dtype=np.float64) - np.asarray(previous, dtype=np.float64))
    return float(d[:3].sum() + FD_RADIUS_MM * d[3:].sum())


def fd_series(params: np.ndarray) -> np.ndarray:
    """FD of every row of a (V, 6) trace (the first row 0)."""
    p = np.asarray(params, dtype=np.float64)
    d = np.abs(np.diff(p, axis=0))
    return np.r_[0.0, d[:, :3].sum(axis=1) + FD_RADIUS_MM * d[:, 3:].sum(axis=1)]


class MotionFile:
    """``--motion-out``: a TSV with ``volume, file``, the six parameters and FD, one row per volume as
    it arrives, each row written whole (one ``write`` call, signals held) and flushed to the OS."""

    HEADER = ("volume", "file") + COLUMNS + ("framewise_displacement",)

    def __init__(self, path: Path, force: bool = False):
        from fmri_edge.data.submission import check_new

        self.path = check_new(Path(path), force)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.rows, self.error, self.size = 0, None, 0
        self._write("\t".join(self.HEADER) + "\n")
        if self.error:
            raise self.error

    def _write(self, line: str) -> bool:
        if self.fd is None:
            return False
        data = line.encode()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            written = 0
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as e:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            self.close()
            self.error = InputError(
                self.path, f"cannot write ({e.strerror or e}); {self.rows} whole row(s) kept"
            )
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.size += len(data)
        return True

    def row(self, volume: int, file: str, params, fd: float) -> bool:
        ok = self._write(
            f"{volume}\t{file}\t" + "\t".join(f"{v:.6f}" for v in params) + f"\t{fd:.6f}\n"
        )
        self.rows += ok
        return ok

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_trace(path: str | Path) -> np.ndarray:
    """A motion trace TSV (fMRIPrep's confounds file works: the six columns are read by name; 'n/a' is
    0) → (V, 6) float64."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(path, f"motion trace cannot be read ({e.strerror or e})") from None
    if not lines:
        raise InputError(
            path, "motion trace is empty; give a TSV with columns " + ", ".join(COLUMNS)
        )
    head = lines[0].split("\t")
    missing = [c for c in COLUMNS if c not in head]
    if missing:
        raise InputError(
            path,
            f"motion trace has no column(s) {', '.join(missing)} (tab-separated, fMRIPrep's names)",
        )
    cols = [head.index(c) for c in COLUMNS]
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            rows.append([0.0 if cells[c] == "n/a" else float(cells[c]) for c in cols])
        except (IndexError, ValueError):
            raise InputError(path, f"line {n}: not {len(head)} tab-separated numbers") from None
    trace = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    if not np.isfinite(trace).all():
        raise InputError(path, "motion trace holds NaN or Inf")
    return trace


def drift_trace(n_volumes: int, seed: int = 0) -> np.ndarray:
    """A built-in moving run (V, 6): a slow drift growing to 1.6 mm / 1.6° over the run, a 2 mm / 1° jump at
    60 % of it (kept afterwards; at most about 3 mm / 3° in all), a fidget every ~40 volumes (0.5 mm /
    0.4° for 3–6 volumes, then back) and a little jitter (0.02 mm / 0.02°)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n_volumes)
    direction = np.array([0.6, -0.5, 0.8, 0.7, -0.4, 0.6])
    drift = np.outer(np.sin(0.5 * np.pi * t), direction / np.abs(direction).max())
    trace = np.empty((n_volumes, 6))
    trace[:, :3] = 1.6 * drift[:, :3]
    trace[:, 3:] = np.deg2rad(1.6) * drift[:, 3:]
    jump = t >= 0.6
    trace[jump, :3] += np.array([1.2, 1.2, -1.0]) * 2.0 / np.linalg.norm([1.2, 1.2, -1.0])
    trace[jump, 3:] += np.deg2rad(1.0) * np.array([0.6, 0.5, -0.62])
    for start in range(15, n_volumes - 8, 40):
        k = start + int(rng.integers(0, 10))
        d = rng.normal(size=6)
        d = d / np.abs(d).max()
        trace[k : k + int(rng.integers(3, 7)), :3] += 0.5 * d[:3]
        trace[k : k + int(rng.integers(3, 7)), 3:] += np.deg2rad(0.4) * d[3:]
    trace[:, :3] += rng.normal(scale=0.02, size=(n_volumes, 3))
    trace[:, 3:] += rng.normal(scale=np.deg2rad(0.02), size=(n_volumes, 3))
    trace[0] = 0.0
    return trace


def write_trace(path: str | Path, trace: np.ndarray) -> Path:
    path = Path(path)
    fd = fd_series(trace)
    path.write_text(
        "\t".join(COLUMNS + ("framewise_displacement",))
        + "\n"
        + "".join("\t".join(f"{v:.6f}" for v in row) + f"\t{f:.6f}\n" for row, f in zip(trace, fd))
    )
    return path


def move_volume(data: np.ndarray, affine: np.ndarray, params, order: int = 3) -> np.ndarray:
    """The volume as the scanner would see the head moved by ``params`` (SPM's six): the tissue at
    world point y is now at ``M · y``, so the new volume at y holds the old one at ``M⁻¹ · y``."""
    from scipy import ndimage

    m = spm_matrix(params)
    a = np.asarray(affine, dtype=np.float64)
    vox = np.linalg.inv(a) @ np.linalg.inv(m) @ a
    data = np.asarray(data, dtype=np.float32)
    return ndimage.affine_transform(
        data, vox[:3, :3], vox[:3, 3], order=order, mode="nearest"
    ).astype(np.float32)
