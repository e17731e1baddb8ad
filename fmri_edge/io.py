"""Find and load trials and labels safely: data files are data, nothing is ever unpickled.

Accepted inputs
- ``.npy`` of shape (N, n_regions, n_times) or (n_regions, n_times);
- ``.npz`` holding such an array under the key ``data``;
- the ICBHI layout: a subject folder holding ``fMRI_data.npz`` (and maybe ``labels.npz``),
  or a folder of such subject folders.

Every problem raises :class:`InputError` with a one-line message naming the file.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_FILE = "fMRI_data.npz"
LABEL_FILE = "labels.npz"
ARRAY_SUFFIXES = (".npy", ".npz")


class InputError(ValueError):
    """A user-facing problem with an input file: one line, names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Source:
    """One unit of input: a participant (subject folder or file stem) and its data file."""

    participant: str
    path: Path


def discover(paths: list[Path]) -> list[Source]:
    """Expand files and folders (ICBHI subject folders, folders of them, folders of arrays)."""
    sources: list[Source] = []
    for p in map(Path, paths):
        if p.is_dir():
            if (p / DATA_FILE).is_file():
                sources.append(Source(p.name, p / DATA_FILE))
                continue
            subjects = sorted(d for d in p.iterdir() if d.is_dir() and (d / DATA_FILE).is_file())
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in ARRAY_SUFFIXES)
            if not subjects and not files:
                raise InputError(p, f"folder holds no {DATA_FILE}, no subject folders and no .npy/.npz files")
            sources += [Source(d.name, d / DATA_FILE) for d in subjects]
            sources += [Source(f.stem, f) for f in files]
        elif p.is_file():
            sources.append(Source(p.parent.name if p.name == DATA_FILE else p.stem, p))
        else:
            raise InputError(p, "no such file or folder")
    return sources


def read_array(path: str | Path, key: str = "data") -> np.ndarray:
    """Read one array from .npy/.npz without ever unpickling (``allow_pickle=False``)."""
    path = Path(path)
    if path.suffix not in ARRAY_SUFFIXES:
        raise InputError(path, f"not a .npy or .npz file (got {path.suffix or 'no suffix'!r})")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key not in z.files:
                    raise InputError(path, f"no array named {key!r} in .npz (found: {', '.join(z.files) or 'none'})")
                arr = z[key]
        else:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except InputError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(path, "holds a pickled/object array; refused (data files are never unpickled)") from None
        raise InputError(path, f"not a readable numpy array ({_short(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputError(path, f"empty, truncated or corrupt ({_short(e)})") from None
    return arr


def check_trials(arr: np.ndarray, path: str | Path, n_regions: int, n_times: int | None) -> np.ndarray:
    """Check dtype and shape without reading values; return a (N, n_regions, n_times) view."""
    if arr.dtype.hasobject:
        raise InputError(path, "holds Python objects; refused (data files are never unpickled)")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(path, f"complex values ({arr.dtype}); expected real BOLD signal")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_):
        raise InputError(path, f"not numeric (dtype {arr.dtype})")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(path, f"expected shape (N, {n_regions}, T) or ({n_regions}, T), got {arr.shape}")
    _, r, t = arr.shape
    if r != n_regions:
        if t == n_regions and (n_times is None or r == n_times):
            raise InputError(path, f"regions and time axes look swapped: got {arr.shape}, expected "
                                   f"(N, {n_regions}, {n_times or 'T'}); transpose with arr.swapaxes(-1, -2)")
        raise InputError(path, f"expected {n_regions} regions (Brainnetome atlas) on axis 1, got {r} "
                               f"(shape {arr.shape})")
    if n_times is not None and t != n_times:
        raise InputError(path, f"expected {n_times} time points per trial, got {t} (shape {arr.shape})")
    if arr.shape[0] == 0:
        raise InputError(path, "holds no trials")
    return arr


def to_float32(arr: np.ndarray) -> np.ndarray:
    """Any numeric dtype, byte order or memory layout → C-contiguous native float32."""
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_trials(arr: np.ndarray, path: str | Path, n_regions: int, n_times: int | None) -> np.ndarray:
    """Check shape and dtype; return float32 (N, n_regions, n_times), C-contiguous, native order."""
    return to_float32(check_trials(arr, path, n_regions, n_times))


def nonfinite_trials(trials: np.ndarray) -> np.ndarray:
    """Indices of trials holding NaN or Inf."""
    return np.flatnonzero(~np.isfinite(trials).all(axis=(1, 2)))


def load_trials(path: str | Path, n_regions: int = 246, n_times: int | None = None) -> np.ndarray:
    """Load and validate a whole trials file (refuses any NaN/Inf)."""
    trials = as_trials(read_array(path), path, n_regions, n_times)
    bad = nonfinite_trials(trials)
    if bad.size:
        raise InputError(path, f"NaN or Inf in {bad.size} trial(s), first at trial {bad[0] + 1}")
    return trials


def load_labels(path: str | Path, n_trials: int | None = None) -> np.ndarray:
    """ICBHI labels.npz → int (N, 2) array of [CLASS, LEVEL], checked against the label sets."""
    arr = read_array(path)
    if arr.dtype.hasobject or not np.issubdtype(arr.dtype, np.number):
        raise InputError(path, f"labels are not numeric (dtype {arr.dtype})")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(path, f"expected labels of shape (N, 2) = [CLASS, LEVEL], got {arr.shape}")
    if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
        raise InputError(path, "labels must be whole numbers")
    labels = arr.astype(np.int64)
    if not np.isin(labels[:, 0], (-1, 0, 1)).all():
        raise InputError(path, "CLASS labels outside {-1, 0, 1}")
    if (np.abs(labels[:, 1]) > 4).any():
        raise InputError(path, "LEVEL labels outside {-4 … 4}")
    if n_trials is not None and len(labels) != n_trials:
        raise InputError(path, f"{len(labels)} label rows for {n_trials} trials")
    return labels


def load_icbhi(root: str | Path, n_times: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labeled ICBHI folder (e.g. ``Train``) → {participant: (trials (N, 246, T), labels (N, 2))}."""
    out = {}
    for src in discover([Path(root)]):
        trials = load_trials(src.path, n_times=n_times)
        label_path = src.path.parent / LABEL_FILE
        if not label_path.is_file():
            raise InputError(label_path, "missing (needed for training and scoring)")
        out[src.participant] = (trials, load_labels(label_path, len(trials)))
    return out


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__
