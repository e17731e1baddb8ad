"""From preprocessed NIfTI BOLD + a label atlas + BIDS events to the model's trials.

Optional: needs the ``nifti`` extra (``pip install 'fmri-edge[nifti]'``: nilearn + nibabel).
nilearn and nibabel are imported inside the functions that use them, so importing this module
(and ``fmri_edge.cli``) costs nothing on a runtime install.

What one run goes through
1. The BOLD image (4-D NIfTI), read safely (:mod:`fmri_edge.volumes`: the header checked against the
   file before anything is allocated; damage is one :class:`InputError`), and its TR:
   ``header.get_zooms()[3]`` in the header's time unit (seconds, or ms/µs converted; an unknown unit
   is taken as seconds when plausible), or ``tr`` given by the user.
2. The atlas: a 3-D image of whole-number labels 1 … n_regions (the Brainnetome atlas: label v is
   region v − 1 of the model's ``region_names``, 0 is background; NaN background and float labels
   are accepted with a note). Missing or unexpected labels are refused, naming them. An atlas on
   another grid (shape or affine) than the BOLD is resampled to the BOLD's grid with
   nearest-neighbour interpolation (nilearn), and a note says so; a label that has no voxel left
   after resampling is refused.
3. Region means per volume, raw: by the kernel (:class:`fmri_edge.volumes.RegionIndex`), the run
   read block by block — the values of nilearn's ``NiftiLabelsMasker(strategy="mean")``. When
   confounds, detrending or filtering are asked (they need the whole run), nilearn's masker does it
   all: ``standardize=None``, confounds regressed out (nilearn standardizes the confounds, so each
   region's mean level is kept).
4. Volume times: volume ``k`` (0-based) is taken at ``(k + slice_time_ref) · TR`` seconds from the
   start of the scan, the clock of the events file (BIDS: onsets from the start of the first
   volume's acquisition). The default ``slice_time_ref = 0`` puts volume k at k · TR; data
   slice-time corrected to the middle of each volume (fMRIPrep's reference 0.5) use 0.5.
5. One trial per event row: the 1-s samples ``onset − baseline_s + j`` for ``j = 0 … n_times − 1``,
   each linearly interpolated between the two volumes around it (``numpy.interp``). An event whose
   first or last sample falls outside the volumes is skipped and reported: nothing is padded or
   extrapolated.

The window (``n_times``, ``baseline_s``) and ``n_regions`` come from the model's metadata.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fmri_edge.events import (LABEL_FILE, Events, Labeled, LabelSpec, check_columns, check_study,  # noqa: F401
                              entities, find_events, label_events, read_events, save_labels)
from fmri_edge.io import DATA_FILE, KNOWN_ATLASES, InputError, UsageError

DEFAULT_BASELINE_S = 5           # ICBHI trials: 5 s fixation, 15 s video, 5 s after
DEFAULT_CONFOUNDS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
TR_RANGE = (0.1, 30.0)           # plausible repetition times, seconds
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def require_nifti(command: str = "extract", extra: str = "nifti") -> None:
    """Raise a one-line :class:`UsageError` naming ``command`` and the ``extra`` to install when
    nilearn or nibabel is missing."""
    import importlib

    missing = []
    for name in ("nibabel", "nilearn"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"{command} needs {' and '.join(missing)} (not installed): pip install 'fmri-edge[{extra}]'")


# ---- the window, from the model ---------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Which seconds make a trial: samples ``onset − baseline_s + j``, ``j < n_times``."""

    n_regions: int
    n_times: int
    baseline_s: float
    baseline_from: str = "model metadata"

    def offsets(self) -> np.ndarray:
        return np.arange(self.n_times, dtype=np.float64) - self.baseline_s

    @classmethod
    def from_model(cls, info) -> "Window":
        """From a :class:`~fmri_edge.runtime.ModelInfo`: ``baseline_s`` at the metadata's top level,
        else in its ``normalization`` block, else 5 s (the ICBHI layout), which is said."""
        meta = info.meta
        norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
        if "baseline_s" in meta:
            value, source = meta["baseline_s"], "model metadata (baseline_s)"
        elif "baseline_s" in norm:
            value, source = norm["baseline_s"], "model metadata (normalization.baseline_s)"
        else:
            value, source = DEFAULT_BASELINE_S, f"default {DEFAULT_BASELINE_S} s: the model's metadata has no baseline_s"
        try:
            baseline = float(value)
        except (TypeError, ValueError):
            baseline = float("nan")
        if not 0 <= baseline < info.n_times:
            raise InputError(info.path, f"metadata baseline_s {value!r} is not a number of seconds within the "
                                        f"model's {info.n_times}-s window")
        return cls(info.n_regions, info.n_times, baseline, source)


# ---- events: fmri_edge.events (finding by BIDS inheritance, reading with pandas, labels) ----------------

# ---- cutting trials (numpy only) ---------------------------------------------------------------------

def volume_times(n_volumes: int, tr: float, slice_time_ref: float = 0.0) -> np.ndarray:
    """Seconds of each volume from the start of the scan: ``(k + slice_time_ref) · tr``."""
    return (np.arange(n_volumes, dtype=np.float64) + slice_time_ref) * tr


def cut_trials(times: np.ndarray, signals: np.ndarray, events: Events, window: Window,
               source: str | Path) -> tuple[np.ndarray, np.ndarray, list[InputError]]:
    """Region signals (V, R) at volume ``times`` → (trials (N, R, n_times) float32, indices of the
    events kept, one :class:`InputError` per event skipped because its window leaves the scan)."""
    offsets = window.offsets()
    keep, skipped = [], []
    first, last = times[0], times[-1]
    eps = 1e-6
    for i, onset in enumerate(events.onset):
        t0, t1 = onset + offsets[0], onset + offsets[-1]
        if t0 < first - eps or t1 > last + eps:
            where = (f"starts before the first volume ({first:g} s)" if t0 < first - eps else
                     f"runs past the end of the scan (last volume at {last:g} s)")
            skipped.append(InputError(
                events.path, f"event row {events.row[i]} (onset {onset:g} s, {events.trial_type[i]}): its "
                             f"{window.n_times}-s window {t0:g} … {t1:g} s {where} in {Path(source).name}; "
                             "windows are never padded", outcome="skipped"))
        else:
            keep.append(i)
    keep = np.asarray(keep, dtype=np.int64)
    trials = np.empty((len(keep), signals.shape[1], window.n_times), dtype=np.float32)
    sig = np.asarray(signals, dtype=np.float64)
    for n, i in enumerate(keep):
        t = np.clip(events.onset[i] + offsets, first, last)   # clip only absorbs rounding (≤ eps)
        # linear interpolation of every region at once: the two volumes around each sample
        k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
        w = (t - times[k]) / (times[k + 1] - times[k])
        trials[n] = (sig[k] * (1 - w)[:, None] + sig[k + 1] * w[:, None]).T
    return trials, keep, skipped


# ---- images -----------------------------------------------------------------------------------------------

def bold_tr(img, path: Path, tr: float | None, notes: list[str]) -> float:
    """The repetition time in seconds: ``tr`` if given, else the header's 4th zoom in its unit.
    ``img``: anything with a nibabel ``header`` (a :class:`~fmri_edge.volumes.Header`, an image)."""
    if tr is not None:
        if not TR_RANGE[0] <= tr <= TR_RANGE[1]:
            raise UsageError(f"--tr {tr:g}: give the repetition time in seconds ({TR_RANGE[0]:g} … {TR_RANGE[1]:g})")
        return float(tr)
    zooms = img.header.get_zooms()
    raw = float(zooms[3]) if len(zooms) > 3 else 0.0
    try:
        unit = img.header.get_xyzt_units()[1]
    except (AttributeError, KeyError):
        unit = "unknown"
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}.get(unit)
    value = raw * scale if scale else raw
    if raw <= 0 or not math.isfinite(raw):
        raise InputError(path, f"its header has no repetition time (pixdim[4] = {raw:g}); pass --tr SECONDS")
    if not TR_RANGE[0] <= value <= TR_RANGE[1]:
        raise InputError(path, f"its header's repetition time {raw:g} {unit if scale else '(unit unknown)'} is not "
                               f"a plausible TR in seconds; pass --tr SECONDS")
    if scale is None:
        notes.append(f"{path.name}: the header's time unit is {unit!r}; TR {value:g} taken as seconds "
                     "(pass --tr to override)")
    return value


def _ranges(values) -> str:
    """[1, 2, 3, 7, 9, 10] → '1-3, 7, 9-10' (at most 12 pieces)."""
    values = sorted(int(v) for v in values)
    pieces, start = [], None
    for a, b in zip(values, values[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            pieces.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ", ".join(pieces[:12]) + (f", … ({len(pieces) - 12} more ranges)" if len(pieces) > 12 else "")


class Atlas:
    """A checked label atlas, put (once per grid) on the grids of the images it is used with.

    Accepted as distributed, each with a note: NaN background (taken as 0), float labels (whole
    numbers), a 4-D file of one volume, any grid (1 mm, 2 mm, SPM 181×217×181 or FSL 182×218×182):
    resampled to the image's grid by nearest neighbour (nilearn) when it differs."""

    def __init__(self, path: str | Path, n_regions: int):
        from fmri_edge import volumes

        self.path, self.n_regions = Path(path), n_regions
        self.notes: list[str] = []
        h = volumes.read_header(self.path, "atlas")
        if h.n_volumes > 1:
            raise InputError(self.path, f"atlas must be a 3-D image of region labels, got shape {h.shape} (a 4-D "
                                        "probabilistic atlas? use the maximum-probability label image)")
        data = volumes.read_image(h, "atlas", native=True)
        if data.dtype.kind == "f":
            data = self._whole_numbers(data)
        if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
            raise InputError(self.path, f"atlas values {data.min():g} … {data.max():g} are not region labels")
        self.labels = np.asarray(data, dtype=np.int32)
        self.affine, self.grid = h.affine, volumes.describe_grid(h.shape, h.affine)
        self._check_labels(np.unique(self.labels), "")
        self._on_grid: dict[tuple, tuple[np.ndarray, str | None]] = {}

    def _whole_numbers(self, data: np.ndarray) -> np.ndarray:
        name = self.path.name
        if np.isinf(data).any():
            raise InputError(self.path, "atlas holds infinite values; expected whole-number region labels")
        nan = np.isnan(data)
        if nan.all():
            raise InputError(self.path, "atlas holds only NaN values; expected whole-number region labels")
        if nan.any():
            self.notes.append(f"atlas {name}: {int(nan.sum())} NaN voxels taken as background (0), as in public "
                              "copies of the Brainnetome atlas")
            data = np.where(nan, 0, data)
        whole = np.round(data)
        if not np.allclose(data, whole, atol=1e-3, rtol=0):
            raise InputError(self.path, "atlas values are not whole-number labels (a probability or intensity "
                                        "image?); use the label image (e.g. BN_Atlas_246_2mm.nii.gz)")
        self.notes.append(f"atlas {name}: labels stored as {data.dtype} numbers, read as whole-number labels")
        return whole

    def _check_labels(self, labels: np.ndarray, after: str) -> None:
        labels = labels[labels != 0]
        want = np.arange(1, self.n_regions + 1)
        missing, extra = np.setdiff1d(want, labels), np.setdiff1d(labels, want)
        if missing.size or extra.size:
            known = f" (the {KNOWN_ATLASES[labels.size]} atlas?)" if labels.size in KNOWN_ATLASES and not after else ""
            parts = [f"atlas has {labels.size} region labels{after}{known}, the model needs labels 1 … "
                     f"{self.n_regions} (Brainnetome; 0 = background)"]
            if missing.size:
                parts.append(f"missing labels: {_ranges(missing)}")
            if extra.size:
                parts.append(f"unexpected labels: {_ranges(extra)}")
            raise InputError(self.path, "; ".join(parts))

    def labels_on_grid(self, shape: tuple[int, int, int], affine: np.ndarray, notes: list[str],
                       source: str | Path | None = None) -> np.ndarray:
        """(X, Y, Z) int32 labels on the grid ``shape``/``affine``: the atlas itself when the grids
        agree, else resampled once per grid (nilearn, nearest neighbour), with a note."""
        from fmri_edge.volumes import describe_grid

        affine = np.asarray(affine, dtype=np.float64)
        name = Path(source).name if source else "the image"
        key = (tuple(shape), affine.round(6).tobytes())
        if key not in self._on_grid:
            if self.labels.shape == tuple(shape) and np.allclose(self.affine, affine, atol=1e-4):
                self._on_grid[key] = (self.labels, None)
            else:
                grid = describe_grid(shape, affine)
                data = self._resampled(shape, affine, name, grid)
                present = np.unique(data)
                if not (present != 0).any():
                    raise InputError(self.path, f"atlas {self.grid} and {name} {grid} do not overlap in space: no "
                                                "atlas label falls inside the image; both must be in the same space "
                                                "(e.g. MNI152)")
                self._check_labels(present, f" left after resampling to the grid of {name} {shape} (nearest "
                                            "neighbour)")
                self._on_grid[key] = (data, f"atlas {self.path.name} {self.grid} differs from the grid of {name} "
                                            f"{grid}: resampled the atlas to the BOLD grid (nilearn, nearest neighbour); "
                                            "check that both are in the same space (e.g. MNI152)")
        labels, note = self._on_grid[key]
        notes.extend(self.notes)
        if note:
            notes.append(note)
        return labels

    def _resampled(self, shape, affine, name: str, grid: str) -> np.ndarray:
        """The labels on the grid by nearest neighbour (nilearn); all 0 where the grids do not meet."""
        import warnings

        import nibabel as nib
        from nilearn.image import resample_img
        from nilearn.image.resampling import BoundingBoxError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = resample_img(nib.Nifti1Image(self.labels, self.affine), target_affine=affine,
                                   target_shape=tuple(shape), interpolation="nearest", force_resample=True,
                                   copy_header=True)
        except BoundingBoxError:     # nilearn: the grids do not meet at all
            return np.zeros(tuple(shape), dtype=np.int32)
        except (ValueError, np.linalg.LinAlgError, MemoryError) as e:
            raise InputError(self.path, f"atlas {self.grid} cannot be resampled to the grid of {name} {grid} "
                                        f"({str(e)[:100]})") from None
        return np.asarray(img.dataobj).astype(np.int32)

# ---- confounds --------------------------------------------------------------------------------------------

def read_confounds(path: str | Path, columns: Iterable[str], n_volumes: int) -> np.ndarray:
    """Columns of an fMRIPrep ``*_desc-confounds_timeseries.tsv`` (one row per volume) → (V, C).
    A leading 'n/a' (first row of derivative columns) becomes 0."""
    path, columns = Path(path), list(columns)
    if not path.is_file():
        raise InputError(path, "confounds file not found")
    lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if not lines:
        raise InputError(path, "empty confounds file")
    header = lines[0].split("\t")
    absent = [c for c in columns if c not in header]
    if absent:
        raise InputError(path, f"confounds file lacks column(s) {', '.join(absent)} (has {', '.join(header[:8])}"
                               f"{' …' if len(header) > 8 else ''}); choose with --confound-columns")
    idx = [header.index(c) for c in columns]
    rows = [ln.split("\t") for ln in lines[1:]]
    if len(rows) != n_volumes:
        raise InputError(path, f"{len(rows)} confound rows for {n_volumes} volumes; it must have one row per volume")
    out = np.zeros((n_volumes, len(idx)))
    for r, row in enumerate(rows):
        for c, i in enumerate(idx):
            v = row[i].strip() if i < len(row) else ""
            if v in ("n/a", "") and r == 0:
                continue
            try:
                out[r, c] = float(v)
            except ValueError:
                raise InputError(path, f"row {r + 1} column {columns[c]}: {v!r} is not a number") from None
    if not np.isfinite(out).all():
        raise InputError(path, "confounds hold NaN or Inf values")
    return out


# ---- one run -------------------------------------------------------------------------------------------

@dataclass
class ExtractOptions:
    """How region signals are made; every non-default changes the raw signal the model expects."""

    tr: float | None = None
    slice_time_ref: float = 0.0
    trial_types: tuple[str, ...] = ()
    confounds: str | None = None             # a TSV path, or "auto" (fMRIPrep's, beside each BOLD)
    confound_columns: tuple[str, ...] = DEFAULT_CONFOUNDS
    detrend: bool = False
    high_pass: float | None = None
    labels: LabelSpec | None = None          # CLASS and LEVEL of each trial from the events (a lab's study)


@dataclass
class RunResult:
    bold: Path
    events: Path
    trials: np.ndarray          # (N, R, T) float32
    onset: np.ndarray           # (N,) float64
    trial_type: np.ndarray      # (N,) unicode
    n_volumes: int
    tr: float
    skipped: list[InputError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: Labeled | None = None   # the kept trials' CLASS and LEVEL (with ``ExtractOptions.labels``)


def needs_nilearn(opts: ExtractOptions, confounds) -> bool:
    """Confound regression, detrending and filtering need the whole run: nilearn does them."""
    return confounds is not None or opts.detrend or opts.high_pass is not None


def region_signals(bold, atlas: Atlas, tr: float, opts: ExtractOptions, confounds, notes,
                   block_volumes: int | None = None) -> np.ndarray:
    """(V, n_regions) raw mean signal per region and volume of a checked BOLD header
    (:class:`~fmri_edge.volumes.Header`): the region-means kernel over blocks of volumes, or nilearn's
    labels masker on the whole run when confounds, detrending or filtering are asked."""
    from fmri_edge import volumes

    labels = atlas.labels_on_grid(bold.volume_shape, bold.affine, notes, bold.path)
    if not needs_nilearn(opts, confounds):
        index = volumes.RegionIndex(labels, atlas.n_regions)
        return np.concatenate([index.means(block) for block in
                               volumes.iter_blocks(bold, block_volumes or volumes.DEFAULT_BLOCK_VOLUMES)])
    return _masker_signals(volumes.read_image(bold, "BOLD image"), bold.affine, labels, atlas, tr, opts, confounds)


def _masker_signals(data, affine, labels, atlas: Atlas, tr: float, opts: ExtractOptions, confounds) -> np.ndarray:
    import warnings

    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(labels_img=nib.Nifti1Image(labels, affine), background_label=0, strategy="mean",
                               standardize=None, detrend=opts.detrend, high_pass=opts.high_pass, t_r=tr,
                               resampling_target=None, keep_masked_labels=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        signals = masker.fit_transform(nib.Nifti1Image(data, affine), confounds=confounds)
    ids = getattr(masker, "region_ids_", None)
    if isinstance(ids, dict):
        got = [int(v) for k, v in ids.items() if k != "background"]
        if got != list(range(1, atlas.n_regions + 1)):
            raise InputError(atlas.path, f"nilearn returned regions {_ranges(got)}, expected 1 … {atlas.n_regions}")
    if signals.shape[1] != atlas.n_regions:
        raise InputError(atlas.path, f"nilearn returned {signals.shape[1]} regions, expected {atlas.n_regions}")
    return np.asarray(signals, dtype=np.float64)


def run_labels(events: str | Path | Events, window: Window, opts: ExtractOptions) -> Labeled:
    """The labeled events of one run (``opts.labels``): the rows mapped to a class, with their LEVEL."""
    ev = events if isinstance(events, Events) else read_events(events, opts.trial_types)
    offsets = window.offsets()
    return label_events(ev, opts.labels, (float(offsets[0]), float(offsets[-1])))


def extract_run(bold: str | Path, atlas: Atlas, events: str | Path | Events | Labeled, window: Window,
                opts: ExtractOptions | None = None, confounds_path: str | Path | None = None,
                block_volumes: int | None = None) -> RunResult:
    """One 4-D BOLD run → its trials; raises :class:`InputError` for a run that cannot be used.
    With ``opts.labels`` (or already labeled events) only the events mapped to a class are cut."""
    from fmri_edge import volumes

    opts = opts or ExtractOptions()
    bold = Path(bold)
    notes: list[str] = []
    if not bold.name.endswith(NIFTI_SUFFIXES):
        raise InputError(bold, "not a NIfTI image (.nii or .nii.gz)")
    lab = events if isinstance(events, Labeled) else run_labels(events, window, opts) if opts.labels else None
    ev = lab.events if lab is not None else events if isinstance(events, Events) else read_events(events, opts.trial_types)
    h = volumes.read_header(bold, "BOLD image")
    if len(h.shape) != 4:
        raise InputError(bold, f"{len(h.shape)}-D image (shape {h.shape}); extract needs a 4-D BOLD time "
                               "series (x, y, z, volumes), not a single volume or an anatomical image")
    n_vol = h.n_volumes
    if n_vol < 2:
        raise InputError(bold, f"4-D image with {n_vol} volume: at least 2 are needed to interpolate in time")
    tr = bold_tr(h, bold, opts.tr, notes)
    conf = read_confounds(confounds_path, opts.confound_columns, n_vol) if confounds_path else None
    try:
        signals = region_signals(h, atlas, tr, opts, conf, notes, block_volumes)
    except MemoryError:
        raise InputError(bold, f"not enough memory to extract this run ({'×'.join(map(str, h.shape))})") from None
    if not np.isfinite(signals).all():
        raise InputError(bold, "region signals hold NaN or Inf (NaN voxels in the BOLD image?)")
    times = volume_times(n_vol, tr, opts.slice_time_ref)
    trials, keep, skipped = cut_trials(times, signals, ev, window, bold)
    return RunResult(bold, ev.path, trials, ev.onset[keep], ev.trial_type[keep], n_vol, tr, skipped, notes,
                     None if lab is None else lab.take(keep))


# ---- output ----------------------------------------------------------------------------------------------

def save_trials(path: str | Path, results: list[RunResult], force: bool = False, window: Window | None = None,
                atlas: "Atlas | None" = None) -> Path:
    """Write runs' trials, concatenated in the given (run) order, as an ``.npz`` that ``predict``
    reads: ``data`` (N, R, T) float32, ``onset`` (N,) float64 seconds, ``trial_type`` (N,) unicode,
    ``run`` (N,) 1-based index into ``runs`` (M,) unicode (the BOLD file names). Atomic: the file
    appears complete or not at all. Trials are numbered 1 … N in this order by ``predict``."""
    from fmri_edge.files import check_new, replace_atomically

    path = Path(path)
    if path.suffix != ".npz":
        raise UsageError(f"--out {path}: give an .npz file name (e.g. trials.npz)")
    check_new(path, force)
    data = np.concatenate([r.trials for r in results]) if results else np.empty((0, 0, 0), np.float32)
    arrays = {
        "data": np.ascontiguousarray(data, dtype=np.float32),
        "onset": np.concatenate([r.onset for r in results]).astype(np.float64),
        "trial_type": np.asarray(np.concatenate([r.trial_type for r in results]).tolist(), dtype=str),
        "run": np.concatenate([np.full(len(r.trials), i + 1, dtype=np.int64) for i, r in enumerate(results)]),
        "runs": np.asarray([r.bold.name for r in results], dtype=str),
    }
    if window is not None:  # the window the trials were cut with: predict warns when a model's differs
        arrays["baseline_s"], arrays["n_times"] = np.float64(window.baseline_s), np.int64(window.n_times)
    if atlas is not None:   # which atlas made them (fmri_edge.atlas_provenance): predict warns on another model's
        from fmri_edge import atlas_provenance

        arrays[atlas_provenance.ATLAS_KEY] = atlas_provenance.as_array(atlas_provenance.provenance(atlas))
    with replace_atomically(path, binary=True) as f:
        np.savez(f, **arrays)
    return path


# ---- BIDS folders -----------------------------------------------------------------------------------------

@dataclass
class BidsRun:
    participant: str          # "sub-01"
    bold: Path
    events: Path | None       # None: not found (the run is reported, the others go on)
    confounds: Path | None
    searched: list[Path] = field(default_factory=list)
    duplicate_of: Path | None = None   # the same run also as .nii.gz: this copy is not read (reported)

    @property
    def sort_key(self):
        e = entities(self.bold.name)
        run = e.get("run", "0")
        return (e.get("ses", ""), e.get("task", ""), int(run) if run.isdigit() else 0, run, self.bold.name)


def _events_name(bold: Path) -> str:
    return _stem(bold.name) + "_events.tsv"


def _stem(name: str) -> str:
    e = entities(name)
    return "_".join(f"{k}-{e[k]}" for k in ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run") if k in e)


def confounds_beside(bold: str | Path) -> Path:
    """fMRIPrep's confounds file for a preprocessed BOLD: ``<sub…run>_desc-confounds_timeseries.tsv``."""
    bold = Path(bold)
    return bold.parent / f"{_stem(bold.name)}_desc-confounds_timeseries.tsv"


def find_bids_runs(root: str | Path, task: str | None = None, space: str | None = None,
                   confounds: bool = False) -> dict[str, list[BidsRun]]:
    """fMRIPrep-named preprocessed runs under ``root`` (``sub-*/[ses-*/]func/*_desc-preproc_bold.nii[.gz]``,
    at any depth, e.g. in derivatives/fmriprep) → {participant: runs in order}. Run order: session,
    task, then run number (as a number), then file name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    bolds = sorted(p for pattern in ("*_desc-preproc_bold.nii.gz", "*_desc-preproc_bold.nii")
                   for p in root.rglob(pattern) if p.parent.name == "func" and p.name.startswith("sub-"))
    if task:
        bolds = [b for b in bolds if entities(b.name).get("task") == task]
    spaces = sorted({entities(b.name).get("space", "(none)") for b in bolds})
    if space:
        bolds = [b for b in bolds if entities(b.name).get("space") == space]
    elif len(spaces) > 1:
        raise UsageError(f"{root}: preprocessed BOLD in several spaces ({', '.join(spaces)}); choose one with "
                         "--space (the atlas's space, e.g. MNI152NLin2009cAsym)")
    if not bolds:
        what = " and ".join(x for x in (f"task {task!r}" if task else "", f"space {space!r}" if space else "") if x)
        raise InputError(root, "no preprocessed BOLD found (fMRIPrep naming: sub-*/(ses-*/)func/"
                               f"*_desc-preproc_bold.nii.gz){' for ' + what if what else ''}"
                               + (f"; spaces present: {', '.join(spaces)}" if space and spaces else ""))
    out: dict[str, list[BidsRun]] = {}
    for b in bolds:
        ev, searched = find_events(b, root)
        conf = confounds_beside(b) if confounds else None
        twin = b.with_name(b.name + ".gz") if b.name.endswith(".nii") else None
        out.setdefault(f"sub-{entities(b.name)['sub']}", []).append(BidsRun(
            f"sub-{entities(b.name)['sub']}", b, ev, conf, searched, twin if twin in bolds else None))
    for runs in out.values():
        runs.sort(key=lambda r: r.sort_key)
    return dict(sorted(out.items()))


@dataclass
class ParticipantResult:
    participant: str
    out: Path | None
    runs: list[RunResult]
    failed: list[InputError]
    n_runs: int = 0

    @property
    def n_trials(self) -> int:
        return sum(len(r.trials) for r in self.runs)

    @property
    def skipped(self) -> list[InputError]:
        return [s for r in self.runs for s in r.skipped]


def extract_bids(root: str | Path, atlas: Atlas, out_dir: str | Path, window: Window, opts: ExtractOptions | None = None,
                 task: str | None = None, space: str | None = None, force: bool = False,
                 on_run: Callable[[BidsRun, RunResult | InputError], None] | None = None,
                 runs: dict[str, list[BidsRun]] | None = None,
                 labeled: dict[Path, Labeled | InputError] | None = None,
                 extract: Callable[[BidsRun, Events | Labeled | Path], RunResult] | None = None,
                 ) -> list[ParticipantResult]:
    """Every participant's runs → ``out_dir/<participant>/fMRI_data.npz`` (runs concatenated in run
    order). A run that fails is reported and the participant's other runs, and the other
    participants, still come out. With ``opts.labels``, ``labels.npz`` beside it (one row per
    trial, same order), from ``labeled`` (:func:`label_study`) or the events read here.
    ``extract(run, events)`` gives a run's result (default: here, now; :func:`extract_bids_on`
    collects them from a Dask cluster)."""
    opts = opts or ExtractOptions()
    out_dir = Path(out_dir)
    runs = runs if runs is not None else find_bids_runs(root, task, space, confounds=opts.confounds == "auto")
    if opts.labels is not None and labeled is None:
        labeled = label_study(runs, window, opts)
    extract = extract or (lambda r, events: extract_run(r.bold, atlas, events, window, opts, r.confounds))
    results = []
    for participant, prs in runs.items():
        target = out_dir / participant / DATA_FILE
        done, failed = [], []
        if target.exists() and not force:
            failed.append(InputError(target, "exists; use --force to overwrite"))
            for r in prs:
                on_run and on_run(r, failed[-1])
            results.append(ParticipantResult(participant, None, [], failed, len(prs)))
            continue
        for r in prs:
            if r.duplicate_of is not None:     # never the same run twice in a participant's trials
                failed.append(InputError(r.bold, f"the same run as {r.duplicate_of.name}, which is read; this "
                                                 "copy is not (remove one of them)", outcome="ignored"))
                on_run and on_run(r, failed[-1])
                continue
            def one(r=r):
                if r.events is None:
                    raise InputError(r.bold, f"no events file {_events_name(r.bold)} found (looked in "
                                             f"{', '.join(str(p) for p in r.searched[:3])} …)")
                return extract(r, run_events(r, labeled))
            res = _attempt(r.bold, one)
            (failed if isinstance(res, InputError) else done).append(res)
            on_run and on_run(r, res)
        written = None
        if any(len(x.trials) for x in done):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                written = save_trials(target, [x for x in done if len(x.trials)], force=force, window=window,
                                      atlas=atlas)
                if opts.labels is not None:
                    labs = [x.labels for x in done if len(x.trials)]
                    save_labels(target.parent / LABEL_FILE, *(np.concatenate([getattr(lab, a) for lab in labs])
                                                              for a in ("valence_class", "valence_level", "level_rated")))
            except OSError as e:     # a file where the folder goes, a full disk: this participant only
                failed.append(InputError(target, f"cannot be written ({e.strerror or type(e).__name__})"))
        elif done:
            failed.append(InputError(out_dir / participant, _nothing_kept(done)))
        results.append(ParticipantResult(participant, written, done, failed, len(prs)))
    return results


def _nothing_kept(done: list[RunResult]) -> str:
    """Why a participant whose runs were all read has no trial: its events left the scan, or (labeled)
    the class map (or --min-gap) dropped every one of them."""
    labs = [x.labels for x in done if getattr(x, "labels", None) is not None]
    if labs and not any(len(x.skipped) for x in done):
        reasons: Counter = Counter()
        for lab in labs:
            reasons.update(lab.dropped)
        why = "; ".join(f"{n} × {k}" for k, n in reasons.most_common(3)) or "no event row"
        return (f"every event of its runs was dropped before cutting ({why}); nothing written for this "
                "participant (check --class-map and --min-gap)")
    return "no event of any run fits inside its scan; nothing written for this participant"


def run_events(run: BidsRun, labeled: dict[Path, Labeled | InputError] | None) -> Path | Labeled:
    """What :func:`extract_run` reads a run's trials from: its events file, or its labeled events
    (raises the :class:`InputError` that refused its labels)."""
    events = run.events if labeled is None else labeled[run.bold]
    if isinstance(events, InputError):
        raise events
    return events


def to_write(runs: dict[str, list[BidsRun]], out_dir: str | Path, force: bool,
             labeled: dict[Path, Labeled | InputError] | None = None) -> list[BidsRun]:
    """The runs :func:`extract_bids` will extract: those of participants whose output may be
    written, that have an events file (and labels, when asked)."""
    return [r for participant, prs in runs.items() if force or not (Path(out_dir) / participant / DATA_FILE).exists()
            for r in prs if r.events is not None and r.duplicate_of is None
            and not (labeled is not None and isinstance(labeled.get(r.bold), InputError))]


# ---- on a Dask cluster (the dask extra) -------------------------------------------------------------------

_worker_atlases: dict[tuple, Atlas] = {}


def run_task(run: BidsRun, events: Path | Labeled, atlas_path: str, n_regions: int, window: Window,
             opts: ExtractOptions) -> RunResult | InputError:
    """One run on a Dask worker: its result, or the :class:`InputError` saying why it cannot be used
    (returned, not raised: a bad run is reported, never retried). The worker reads the atlas
    itself, once per process (workers need the inputs at the same paths as the client)."""
    def one():
        path = Path(atlas_path)
        key = (str(path), n_regions, *((path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else ()))
        if key not in _worker_atlases:
            _worker_atlases[key] = Atlas(path, n_regions)
        return extract_run(run.bold, _worker_atlases[key], events, window, opts, run.confounds)
    return _attempt(run.bold, one)


def extract_bids_on(address: str, root: str | Path, atlas: Atlas, out_dir: str | Path, window: Window,
                    opts: ExtractOptions | None = None, force: bool = False,
                    on_run: Callable[[BidsRun, RunResult | InputError], None] | None = None,
                    runs: dict[str, list[BidsRun]] | None = None,
                    labeled: dict[Path, Labeled | InputError] | None = None) -> list[ParticipantResult]:
    """:func:`extract_bids` with the runs extracted by the workers of a Dask scheduler
    (``tcp://host:8786``) or of a local cluster of N processes (``local:N``): every run is submitted
    at once, the client collects the results in run order and writes each participant's file as
    :func:`extract_bids` does (the same files, the same reports)."""
    from fmri_edge import cluster

    opts = opts or ExtractOptions()
    runs = runs if runs is not None else find_bids_runs(root, confounds=opts.confounds == "auto")
    if opts.labels is not None and labeled is None:
        labeled = label_study(runs, window, opts)
    distributed = cluster._distributed()
    with cluster.connect(address) as (client, _):
        futures = {r.bold: client.submit(run_task, r, run_events(r, labeled), str(atlas.path.resolve()),
                                         atlas.n_regions, window, opts, pure=False)
                   for r in to_write(runs, out_dir, force, labeled)}

        def collect(run: BidsRun, events) -> RunResult:
            result = cluster._result(futures.pop(run.bold), address, distributed)
            if isinstance(result, InputError):
                raise result
            return result

        return extract_bids(root, atlas, out_dir, window, opts, force=force, on_run=on_run, runs=runs,
                            labeled=labeled, extract=collect)


def label_study(runs: dict[str, list[BidsRun]], window: Window, opts: ExtractOptions) -> dict[Path, Labeled | InputError]:
    """Every run's events labeled before any image is read: {BOLD: labeled events, or the
    :class:`InputError` that refuses that run (its events file lacks a column)}. A problem that is
    the study's (a class-map value that occurs nowhere, a column no file has, a rating outside the
    scale) raises, so nothing is extracted under a wrong option."""
    out: dict[Path, Labeled | InputError] = {}
    for prs in runs.values():
        for r in prs:
            if r.events is None:
                continue
            try:   # a damaged events file (empty, header only, malformed) refuses its run only
                ev = read_events(r.events, opts.trial_types)
                check_columns(ev, opts.labels)
            except InputError as e:
                out[r.bold] = e
                continue
            out[r.bold] = run_labels(ev, window, opts)
    if not out:   # no run has an events file: say where they were looked for (as the unlabeled path does)
        first = next((r for prs in runs.values() for r in prs), None)
        if first is not None:
            raise InputError(first.bold, f"no events file {_events_name(first.bold)} found for any run (looked in "
                                         f"{', '.join(str(p) for p in first.searched[:3])} …); labels come from "
                                         "each run's BIDS *_events.tsv")
    check_study(out, opts.labels)
    return out


def labels_summary(results: list[ParticipantResult], spec: LabelSpec, window: Window, root: Path) -> dict:
    """What ``OUT/labels.json`` records: the options, the events files used, per-participant ×
    class counts, rows dropped by reason, trials whose window holds another kept event."""
    dropped: Counter = Counter()
    participants, overlapping = {}, 0
    for p in results:
        kept = [r for r in p.runs if len(r.trials)]
        for r in p.runs:
            dropped.update(r.labels.dropped)
        n_outside = sum(len(r.skipped) for r in p.runs)
        if n_outside:
            dropped["window outside the scan"] += n_outside
        if not kept:
            continue
        cls = np.concatenate([r.labels.valence_class for r in kept])
        over = int(sum(r.labels.overlapping.sum() for r in kept))
        overlapping += over
        participants[p.participant] = {
            "trials": int(len(cls)), **{f"CLASS {c:+d}" if c else "CLASS 0": int((cls == c).sum()) for c in (-1, 0, 1)},
            "rated": int(sum(r.labels.level_rated.sum() for r in kept)), "overlapping": over,
            "runs": [{"bold": str(r.bold), "events": str(r.events), "trials": len(r.trials)} for r in kept]}
    single = [p for p, c in participants.items() if sum(c[k] > 0 for k in ("CLASS -1", "CLASS 0", "CLASS +1")) < 2]
    return {"study": str(root), **spec.describe(),
            "window": {"n_regions": window.n_regions, "n_times": window.n_times, "baseline_s": window.baseline_s},
            "participants": participants, "dropped": dict(dropped),
            "overlapping": {"trials": overlapping, "meaning": "trials whose window holds the onset of another kept "
                            "event (fast event-related designs); drop them with --min-gap SECONDS"},
            "single_class_participants": single}


def _attempt(bold: Path, work: Callable[[], RunResult]) -> RunResult | InputError:
    """``work()``, or the :class:`InputError` saying why the run cannot be used: whatever the reader
    did not name (an OS or decompression error, memory) is still one line about this run."""
    try:
        return work()
    except InputError as e:
        return e
    except (OSError, EOFError, MemoryError) as e:
        return InputError(bold, f"cannot be read ({type(e).__name__}: {_short(e)})")


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__
