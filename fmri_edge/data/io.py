"""Find and load trials and labels safely: data files are data, nothing is ever unpickled.

Accepted inputs
- ``.npy`` of shape (N, n_regions, n_times) or (n_regions, n_times);
- ``.npz`` holding such an array under the key ``data``;
- the ICBHI layout: a subject folder holding ``fMRI_data.npz`` (and maybe ``labels.npz``),
  or a folder of such subject folders.

Any real numeric dtype, byte order and memory layout is accepted and converted to native,
C-ordered float32. Headers are read and checked before any data: object (pickled) arrays are
refused without being loaded, truncated files are named as such.

Every problem raises :class:`InputError` with a one-line message naming the file (and the trial,
where one trial is at fault): what was expected, what was found, and what to do.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmri_edge.data.arrays import (  # noqa: F401  (io's readers are the arrays module's)
    ARRAY_SUFFIXES,
    Header,
    _check_dtype,
    _short,
    read_array,
    read_header,
)
from fmri_edge.errors import InputError

DATA_FILE = "fMRI_data.npz"
LABEL_FILE = "labels.npz"
NAN_POLICIES = ("skip", "error", "interpolate")
IGNORED = "ignored"  # the outcome of a note about something deliberately not read
MAX_DEPTH = 32
MAX_INTERPOLATED = 0.5  # --nan interpolate fills at most this fraction of a region's seconds
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Region counts of common atlases, to say where a wrong-sized file probably comes from.
KNOWN_ATLASES = {
    90: "AAL-90",
    100: "Schaefer-100",
    116: "AAL-116",
    160: "Dosenbach-160",
    200: "Schaefer-200 or Craddock-200",
    264: "Power-264",
    268: "Shen-268",
    333: "Gordon-333",
    360: "Glasser-360 (HCP-MMP)",
    400: "Schaefer-400",
}


@dataclass(frozen=True)
class Source:
    """One unit of input: a participant (subject folder or file stem) and its data file."""

    participant: str
    path: Path


def iter_sources(paths) -> Iterator[Source | InputError]:
    """Every trial file under ``paths``, path by path (:func:`walk`): a path that cannot be
    expanded is yielded as its :class:`InputError` and the others go on; a folder deliberately
    not entered is yielded as an ``ignored`` note."""
    for p in paths:
        yield from walk(Path(p))


def discover(paths: list[Path]) -> list[Source]:
    """:func:`walk` as a list; raises the first path that cannot be expanded (notes are dropped)."""
    sources: list[Source] = []
    for p in map(Path, paths):
        for item in walk(p):
            if isinstance(item, Source):
                sources.append(item)
            elif item.outcome != IGNORED:
                raise item
    return sources


def walk(p: Path) -> Iterator[Source | InputError]:
    """Expand a file or a study tree of any depth: ICBHI subject folders (holding ``fMRI_data.npz``)
    wherever they are, and ``.npy``/``.npz`` files in any folder that is not a subject folder. Hidden
    files and folders (``.name``) are skipped; a folder reached again (a symlink loop), a folder
    deeper than :data:`MAX_DEPTH`, and array files or folders inside a subject folder are not
    entered and named in an ``ignored`` note."""
    if p.is_file():
        yield Source(p.parent.name if p.name == DATA_FILE else p.stem, p)
        return
    if not p.is_dir():
        yield InputError(p, "no such file or folder")
        return
    found = 0
    for item in _walk_folder(p, set(), 0):
        found += isinstance(item, Source)
        yield item
    if not found:
        images = next((f for f in p.rglob("*.nii*") if f.name.endswith((".nii", ".nii.gz"))), None)
        yield InputError(
            p,
            f"folder holds no {DATA_FILE}, no subject folders and no .npy/.npz files (at any "
            "depth); point at trial files or ICBHI subject folders"
            + (
                f"; it holds NIfTI images ({images.name}; a BIDS study?): run `fmri-edge extract "
                f"{p} --atlas ATLAS.nii.gz --out TRIALS` first, then predict TRIALS"
                if images
                else ""
            ),
        )


def _walk_folder(d: Path, visited: set, depth: int) -> Iterator[Source | InputError]:
    try:
        real = d.resolve()
        entries = sorted(e for e in d.iterdir() if not e.name.startswith("."))
    except OSError as e:
        yield InputError(
            d, f"folder not entered: cannot be listed ({e.strerror or e})", outcome=IGNORED
        )
        return
    if real in visited:
        yield InputError(
            d,
            f"folder not entered: it is {real}, already searched (a symlink loop or a second "
            "link to it)",
            outcome=IGNORED,
        )
        return
    if depth > MAX_DEPTH:
        yield InputError(
            d,
            f"folder not entered: more than {MAX_DEPTH} levels below the path given; "
            "point at it directly",
            outcome=IGNORED,
        )
        return
    visited.add(real)
    if (d / DATA_FILE).is_file():
        yield Source(d.name, d / DATA_FILE)
        others = [
            e.name
            for e in entries
            if e.name not in (DATA_FILE, LABEL_FILE) and (e.is_dir() or e.suffix in ARRAY_SUFFIXES)
        ]
        if others:
            yield InputError(
                d,
                f"{', '.join(others[:5])}{' …' if len(others) > 5 else ''} not read: a subject "
                f"folder's trials are its {DATA_FILE}; move other trial files out of it",
                outcome=IGNORED,
            )
        return
    for e in entries:
        if e.is_file() and e.suffix in ARRAY_SUFFIXES:
            yield Source(e.stem, e)
    for e in entries:
        if e.is_dir():
            yield from _walk_folder(e, visited, depth + 1)


@dataclass(frozen=True)
class Survey:
    """What a set of inputs holds, from the file headers alone (for the summary line)."""

    files: int
    participants: int
    trials: int  # declared by the headers of the files not refused


def survey(paths, refused=()) -> Survey:
    """Count the distinct trial files under ``paths``, their participants and the trials their
    headers declare; reads nothing but headers. The trials of ``refused`` files (and of files
    whose header cannot be read) are not counted: their headers are not to be trusted."""
    seen, participants, trials = set(), set(), 0
    refused = {Path(p).resolve() for p in refused}
    for src in iter_sources(paths):
        if not isinstance(src, Source) or src.path.resolve() in seen:
            continue
        seen.add(src.path.resolve())
        participants.add(src.participant)
        shape = None if src.path.resolve() in refused else declared_shape(src.path)
        trials += (
            (shape[0] if len(shape) == 3 else 1 if len(shape) == 2 else 0)
            if shape is not None
            else 0
        )
    return Survey(len(seen), len(participants), trials)


def declared_shape(path: Path, key: str = "data") -> tuple | None:
    """The shape a .npy file's (or an .npz member's) header declares; None where it cannot be read."""
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                return read_header(path, f).shape
        with zipfile.ZipFile(path) as z, z.open(key if key in z.namelist() else f"{key}.npy") as m:
            return read_header(path, m).shape
    except (
        InputError,
        OSError,
        EOFError,
        KeyError,
        ValueError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ):
        return None


# ---- checking trials ----------------------------------------------------------------------------------


def check_trials(
    arr: np.ndarray,
    path: str | Path,
    n_regions: int,
    n_times: int | None,
    crop: bool = False,
    pad: bool = False,
) -> np.ndarray:
    """Check dtype and shape without reading values; return a (N, n_regions, T) view.

    With ``crop``, trials longer than ``n_times`` keep their first ``n_times`` seconds; with
    ``pad``, shorter trials are accepted (extend them with :func:`pad_times`). Otherwise a
    different T is refused: nothing is ever reshaped silently.
    """
    _check_dtype(arr.dtype, path)
    shape = arr.shape  # as stored, for the messages
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(
            path,
            f"wrong number of dimensions: expected (N, {n_regions}, {n_times or 'T'}) or "
            f"({n_regions}, {n_times or 'T'}), got {arr.ndim}-D shape {arr.shape}"
            + ("; drop the extra axes (e.g. numpy.squeeze)" if arr.ndim > 3 else ""),
        )
    _, r, t = arr.shape
    if r != n_regions:
        if t == n_regions and (n_times is None or r == n_times):
            raise InputError(
                path,
                f"regions and time axes look swapped: expected (N, {n_regions}, "
                f"{n_times or 'T'}), got {shape}; transpose with arr.swapaxes(-1, -2)",
            )
        atlas = f", the size of the {KNOWN_ATLASES[r]} atlas" if r in KNOWN_ATLASES else ""
        raise InputError(
            path,
            f"expected {n_regions} regions (Brainnetome atlas) on axis 1, got {r}{atlas} "
            f"(shape {shape}); extract the region time series with the Brainnetome "
            f"{n_regions}-region atlas",
        )
    if arr.shape[0] == 0:
        raise InputError(path, f"holds no trials (shape {shape})")
    if t == 0:
        raise InputError(path, f"its trials have no time points (shape {shape})")
    if n_times is not None and t != n_times:
        if t > n_times and crop:
            return arr[:, :, :n_times]
        if t < n_times and pad:
            return arr
        fix = (
            f"pass --crop to keep the first {n_times} s of each trial"
            if t > n_times
            else f"pass --pad to repeat each trial's last second up to {n_times} s"
        )
        raise InputError(
            path,
            f"expected {n_times} time points (seconds) per trial, got {t} "
            f"(shape {shape}); {fix}, or use a model trained for {t} s",
        )
    return arr


def to_float32(arr: np.ndarray) -> np.ndarray:
    """Any numeric dtype, byte order or memory layout → C-contiguous native float32.
    Values beyond the float32 range become ±Inf (and are then reported as non-finite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=np.float32)


def pad_times(trials: np.ndarray, n_times: int) -> np.ndarray:
    """(N, R, T ≤ n_times) → (N, R, n_times), repeating each region's last second (``--pad``)."""
    missing = n_times - trials.shape[2]
    if missing <= 0:
        return trials
    return np.pad(trials, ((0, 0), (0, 0), (0, missing)), mode="edge")


# ---- checking values, trial by trial ----------------------------------------------------------------


def nonfinite_trials(trials: np.ndarray) -> np.ndarray:
    """Indices of trials holding NaN or Inf."""
    return np.flatnonzero(~np.isfinite(trials).all(axis=(1, 2)))


def describe_nonfinite(raw: np.ndarray, converted: np.ndarray) -> str:
    """What is wrong with one trial: counts of NaN, ±Inf and values beyond float32, and where first.
    ``raw`` is the trial as stored, ``converted`` the same trial as float32."""
    bad = ~np.isfinite(converted)
    region, second = np.argwhere(bad)[0]
    raw = np.asarray(raw)
    n_nan = int(np.isnan(raw).sum()) if raw.dtype.kind == "f" else 0
    n_inf = int(np.isinf(raw).sum()) if raw.dtype.kind == "f" else 0
    n_big = int(bad.sum()) - n_nan - n_inf
    found = (
        [
            f"{' and '.join(f'{n} {kind}' for n, kind in ((n_nan, 'NaN'), (n_inf, 'Inf')) if n)} value(s)"
        ]
        if n_nan or n_inf
        else []
    )
    if n_big:
        found.append(f"{n_big} value(s) beyond the float32 range ±{FLOAT32_MAX:.1e}")
    return f"{' and '.join(found)}, first at region {region}, second {second} (0-based)"


def interpolate_nonfinite(trial: np.ndarray) -> np.ndarray | None:
    """(R, T) float32 trial → copy with NaN/Inf filled linearly over time from each region's finite
    seconds (held constant past the ends), or None where a region lacks enough finite seconds."""
    bad = ~np.isfinite(trial)
    if (bad.sum(axis=1) > MAX_INTERPOLATED * trial.shape[1]).any():
        return None
    out = trial.copy()
    t = np.arange(trial.shape[1])
    for r in np.flatnonzero(bad.any(axis=1)):
        gap = bad[r]
        out[r, gap] = np.interp(t[gap], t[~gap], trial[r, ~gap])
    return out


def constant_trials(trials: np.ndarray) -> np.ndarray:
    """Indices of finite trials whose every value is the same (e.g. a zero-filled gap)."""
    return np.flatnonzero(trials.min(axis=(1, 2)) == trials.max(axis=(1, 2)))


def load_trials(path: str | Path, n_regions: int = 246, n_times: int | None = None) -> np.ndarray:
    """Load and validate a whole trials file, safely (nothing is unpickled; NaN/Inf refused).

    Parameters
    ----------
    path : str or Path
        A ``.npy`` of shape (N, n_regions, n_times) or (n_regions, n_times), or an ``.npz`` with a
        ``data`` array (ICBHI's ``fMRI_data.npz``).
    n_regions, n_times : int
        The shape the trials must have (``n_times=None``: any length).

    Returns
    -------
    (N, n_regions, n_times) float32 array
        Raises :class:`~fmri_edge.errors.InputError` naming the file and the problem.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "trials.npy"
    >>> np.save(path, np.ones((2, 246, 25), dtype=np.float64))
    >>> load_trials(path).shape, load_trials(path).dtype
    ((2, 246, 25), dtype('float32'))
    >>> np.save(path, np.ones((2, 200, 25)))
    >>> load_trials(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fmri_edge.errors.InputError: ...trials.npy: expected 246 regions (Brainnetome atlas) on axis 1, got 200, ...
    """
    raw = check_trials(read_array(path), path, n_regions, n_times)
    trials = to_float32(raw)
    bad = nonfinite_trials(trials)
    if bad.size:
        raise InputError(
            path,
            f"{describe_nonfinite(raw[bad[0]], trials[bad[0]])} "
            f"({bad.size} such trial(s)); fix or drop these trials",
            trial=int(bad[0]) + 1,
        )
    return trials


# ---- labels ------------------------------------------------------------------------------------------


def load_labels(path: str | Path, n_trials: int | None = None) -> np.ndarray:
    """ICBHI labels.npz → int (N, 2) array of [CLASS, LEVEL], checked against the label sets."""
    arr = read_array(path)
    if arr.dtype.hasobject or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(
            path,
            f"labels are not numeric (dtype {arr.dtype}); expected (N, 2) [CLASS, LEVEL] numbers",
        )
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(path, f"expected labels of shape (N, 2) = [CLASS, LEVEL], got {arr.shape}")
    if len(arr) == 0:
        raise InputError(path, "holds no label rows")
    arr = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr).all(axis=1) | (arr != np.round(arr)).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(path, f"row {i + 1}: labels must be whole numbers, got {arr[i].tolist()}")
    labels = arr.astype(np.int64)
    for col, name, ok, allowed in (
        (0, "CLASS", np.isin(labels[:, 0], (-1, 0, 1)), "{-1, 0, 1}"),
        (1, "LEVEL", np.abs(labels[:, 1]) <= 4, "{-4 … 4}"),
    ):
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise InputError(
                path,
                f"row {i + 1}: {name} {labels[i, col]} outside {allowed} "
                f"({int((~ok).sum())} such row(s))",
            )
    if n_trials is not None and len(labels) != n_trials:
        raise InputError(
            path,
            f"{len(labels)} label rows for {n_trials} trials; labels and {DATA_FILE} must "
            "have one row per trial, in the same order",
        )
    return labels


def load_icbhi(
    root: str | Path, n_times: int | None = None, n_regions: int = 246
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labeled ICBHI folder (e.g. ``Train``, or extract's labeled output) → {participant: (trials
    (N, n_regions, T), labels (N, 2))}."""
    out, where = {}, {}
    for src in discover([Path(root)]):
        if (
            src.participant in where
        ):  # siteA/sub-01 and siteB/sub-01: never one participant silently
            raise InputError(
                root,
                f"two participant folders are both named {src.participant}: "
                f"{where[src.participant].parent} and {src.path.parent}; within one study every "
                "participant needs its own name (rename one, or give each site as a study of "
                "its own)",
            )
        where[src.participant] = src.path
        trials = load_trials(src.path, n_regions=n_regions, n_times=n_times)
        label_path = src.path.parent / LABEL_FILE
        if not label_path.is_file():
            raise InputError(
                label_path,
                "missing (needed for training and scoring); trials extracted without "
                "labels: rerun fmri-edge extract with --class-column COLUMN --class-map "
                "VALUE=CLASS,… (docs/own-study.md)",
            )
        out[src.participant] = (trials, load_labels(label_path, len(trials)))
    return out
