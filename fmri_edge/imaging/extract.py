"""From preprocessed NIfTI BOLD + a label atlas + BIDS events to the model's trials.

Optional: needs the ``nifti`` extra (``pip install 'fmri-edge[nifti]'``: nilearn + nibabel).
nilearn and nibabel are imported inside the functions that use them, so importing this module
(and ``fmri_edge.cli``) costs nothing on a runtime install.

What one run goes through
1. The BOLD image (4-D NIfTI), read safely (:mod:`fmri_edge.imaging.volumes`: the header checked against the
   file before anything is allocated; damage is one :class:`InputError`), and its TR:
   ``header.get_zooms()[3]`` in the header's time unit (seconds, or ms/µs converted; an unknown unit
   is taken as seconds when plausible), or ``tr`` given by the user.
2. The atlas: a 3-D image of whole-number labels 1 … n_regions (the Brainnetome atlas: label v is
   region v − 1 of the model's ``region_names``, 0 is background; NaN background and float labels
   are accepted with a note). Missing or unexpected labels are refused, naming them. An atlas on
   another grid (shape or affine) than the BOLD is resampled to the BOLD's grid with
   nearest-neighbour interpolation (nilearn), and a note says so; a label that has no voxel left
   after resampling is refused.
3. Region means per volume, raw: by the kernel (:class:`fmri_edge.imaging.volumes.RegionIndex`), the run
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.imaging.events import (
    Events,
    Labeled,
    LabelSpec,
    label_events,
    read_events,
)
from fmri_edge.errors import InputError, UsageError
from fmri_edge.imaging.atlas import Atlas, label_ranges
from fmri_edge.imaging.confounds import read_confounds
from fmri_edge.imaging.window import TR_RANGE, Window, cut_trials, volume_times

DEFAULT_CONFOUNDS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
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
        raise UsageError(
            f"{command} needs {' and '.join(missing)} (not installed): pip install 'fmri-edge[{extra}]'"
        )


# ---- images -----------------------------------------------------------------------------------------------


def bold_tr(img, path: Path, tr: float | None, notes: list[str]) -> float:
    """The repetition time in seconds: ``tr`` if given, else the header's 4th zoom in its unit.
    ``img``: anything with a nibabel ``header`` (a :class:`~fmri_edge.imaging.volumes.Header`, an image)."""
    if tr is not None:
        if not TR_RANGE[0] <= tr <= TR_RANGE[1]:
            raise UsageError(
                f"--tr {tr:g}: give the repetition time in seconds ({TR_RANGE[0]:g} … {TR_RANGE[1]:g})"
            )
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
        raise InputError(
            path, f"its header has no repetition time (pixdim[4] = {raw:g}); pass --tr SECONDS"
        )
    if not TR_RANGE[0] <= value <= TR_RANGE[1]:
        raise InputError(
            path,
            f"its header's repetition time {raw:g} {unit if scale else '(unit unknown)'} is not "
            f"a plausible TR in seconds; pass --tr SECONDS",
        )
    if scale is None:
        notes.append(
            f"{path.name}: the header's time unit is {unit!r}; TR {value:g} taken as seconds "
            "(pass --tr to override)"
        )
    return value


# ---- one run -------------------------------------------------------------------------------------------


@dataclass
class ExtractOptions:
    """How region signals are made; every non-default changes the raw signal the model expects."""

    tr: float | None = None
    slice_time_ref: float = 0.0
    trial_types: tuple[str, ...] = ()
    confounds: str | None = None  # a TSV path, or "auto" (fMRIPrep's, beside each BOLD)
    confound_columns: tuple[str, ...] = DEFAULT_CONFOUNDS
    detrend: bool = False
    high_pass: float | None = None
    labels: LabelSpec | None = None  # CLASS and LEVEL of each trial from the events (a lab's study)
    confounds_strategy: object | None = (
        None  # fmri_edge.imaging.confounds.Strategy: nilearn's fMRIPrep strategies
    )


@dataclass
class RunResult:
    bold: Path
    events: Path
    trials: np.ndarray  # (N, R, T) float32
    onset: np.ndarray  # (N,) float64
    trial_type: np.ndarray  # (N,) unicode
    n_volumes: int
    tr: float
    skipped: list[InputError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: Labeled | None = (
        None  # the kept trials' CLASS and LEVEL (with ``ExtractOptions.labels``)
    )
    scrubbed: dict | None = (
        None  # --confounds-strategy: volumes censored, trials dropped / interpolated
    )
    scrubbed_volumes: np.ndarray | None = (
        None  # (N,) censored volumes inside each kept trial's window
    )


def needs_nilearn(opts: ExtractOptions, confounds) -> bool:
    """Confound regression, detrending and filtering need the whole run: nilearn does them."""
    return (
        confounds is not None
        or opts.detrend
        or opts.high_pass is not None
        or opts.confounds_strategy is not None
    )


def region_signals(
    bold,
    atlas: Atlas,
    tr: float,
    opts: ExtractOptions,
    confounds,
    notes,
    block_volumes: int | None = None,
    sample_mask=None,
) -> np.ndarray:
    """(V, n_regions) raw mean signal per region and volume of a checked BOLD header
    (:class:`~fmri_edge.imaging.volumes.Header`): the region-means kernel over blocks of volumes, or nilearn's
    labels masker on the whole run when confounds, detrending or filtering are asked."""
    import itertools

    from fmri_edge.imaging import space, volumes

    notes.extend(
        space.check_field_of_view(
            atlas.labels,
            atlas.affine,
            atlas.path,
            atlas.n_regions,
            bold.volume_shape,
            bold.affine,
            bold.path,
            getattr(atlas, "region_names", None),
        )
    )
    note = space.space_note(atlas.path, atlas.labels.shape, bold.path)
    notes.extend([note] if note else [])
    labels = atlas.labels_on_grid(bold.volume_shape, bold.affine, notes, bold.path)
    if not needs_nilearn(opts, confounds):
        index = volumes.RegionIndex(labels, atlas.n_regions)
        blocks = volumes.iter_blocks(bold, block_volumes or volumes.DEFAULT_BLOCK_VOLUMES)
        first = next(blocks)
        space.check_on_brain(
            labels, first.mean(axis=3, dtype=np.float64), bold.affine, atlas.path, bold.path
        )  # the atlas on the brain
        return np.concatenate([index.means(block) for block in itertools.chain([first], blocks)])
    data = volumes.read_image(bold, "BOLD image")
    space.check_on_brain(
        labels,
        data[..., : volumes.DEFAULT_BLOCK_VOLUMES].mean(axis=3, dtype=np.float64),
        bold.affine,
        atlas.path,
        bold.path,
    )
    return _masker_signals(data, bold.affine, labels, atlas, tr, opts, confounds, sample_mask)


def _masker_signals(
    data, affine, labels, atlas: Atlas, tr: float, opts: ExtractOptions, confounds, sample_mask=None
) -> np.ndarray:
    import warnings

    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(
        labels_img=nib.Nifti1Image(labels, affine),
        background_label=0,
        strategy="mean",
        standardize=None,
        detrend=opts.detrend,
        high_pass=opts.high_pass,
        t_r=tr,
        resampling_target=None,
        keep_masked_labels=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        signals = masker.fit_transform(
            nib.Nifti1Image(data, affine), confounds=confounds, sample_mask=sample_mask
        )
    ids = getattr(masker, "region_ids_", None)
    if isinstance(ids, dict):
        got = [int(v) for k, v in ids.items() if k != "background"]
        if got != list(range(1, atlas.n_regions + 1)):
            raise InputError(
                atlas.path,
                f"nilearn returned regions {label_ranges(got)}, expected 1 … {atlas.n_regions}",
            )
    if signals.shape[1] != atlas.n_regions:
        raise InputError(
            atlas.path, f"nilearn returned {signals.shape[1]} regions, expected {atlas.n_regions}"
        )
    return np.asarray(signals, dtype=np.float64)


def run_labels(events: str | Path | Events, window: Window, opts: ExtractOptions) -> Labeled:
    """The labeled events of one run (``opts.labels``): the rows mapped to a class, with their LEVEL."""
    ev = events if isinstance(events, Events) else read_events(events, opts.trial_types)
    offsets = window.offsets()
    return label_events(ev, opts.labels, (float(offsets[0]), float(offsets[-1])))


def extract_run(
    bold: str | Path,
    atlas: Atlas,
    events: str | Path | Events | Labeled,
    window: Window,
    opts: ExtractOptions | None = None,
    confounds_path: str | Path | None = None,
    block_volumes: int | None = None,
) -> RunResult:
    """One 4-D BOLD run → its trials; raises :class:`InputError` for a run that cannot be used.
    With ``opts.labels`` (or already labeled events) only the events mapped to a class are cut."""
    from fmri_edge.imaging import volumes

    opts = opts or ExtractOptions()
    bold = Path(bold)
    notes: list[str] = []
    if not bold.name.endswith(NIFTI_SUFFIXES):
        raise InputError(bold, "not a NIfTI image (.nii or .nii.gz)")
    lab = (
        events
        if isinstance(events, Labeled)
        else run_labels(events, window, opts)
        if opts.labels
        else None
    )
    ev = (
        lab.events
        if lab is not None
        else events
        if isinstance(events, Events)
        else read_events(events, opts.trial_types)
    )
    h = volumes.read_header(bold, "BOLD image")
    if len(h.shape) != 4:
        raise InputError(
            bold,
            f"{len(h.shape)}-D image (shape {h.shape}); extract needs a 4-D BOLD time "
            "series (x, y, z, volumes), not a single volume or an anatomical image",
        )
    n_vol = h.n_volumes
    if n_vol < 2:
        raise InputError(
            bold, f"4-D image with {n_vol} volume: at least 2 are needed to interpolate in time"
        )
    tr = bold_tr(h, bold, opts.tr, notes)
    kept = None
    if (
        opts.confounds_strategy is not None
    ):  # nilearn's fMRIPrep strategy: confounds and censored volumes
        from fmri_edge.imaging import confounds as strategies

        conf, kept = strategies.load(bold, opts.confounds_strategy, n_vol)
    else:
        conf = (
            read_confounds(confounds_path, opts.confound_columns, n_vol) if confounds_path else None
        )
    try:
        signals = region_signals(h, atlas, tr, opts, conf, notes, block_volumes, kept)
    except MemoryError:
        raise InputError(
            bold, f"not enough memory to extract this run ({'×'.join(map(str, h.shape))})"
        ) from None
    if not np.isfinite(signals).all():
        raise InputError(bold, "region signals hold NaN or Inf (NaN voxels in the BOLD image?)")
    times = volume_times(n_vol, tr, opts.slice_time_ref)
    if opts.confounds_strategy is None:
        trials, keep, skipped = cut_trials(times, signals, ev, window, bold)
        return RunResult(
            bold,
            ev.path,
            trials,
            ev.onset[keep],
            ev.trial_type[keep],
            n_vol,
            tr,
            skipped,
            notes,
            None if lab is None else lab.take(keep),
        )
    # censored volumes are never samples: the trials are cut from the kept volumes only (interpolated
    # across a gap); a trial that loses too much of its window is dropped and counted
    from fmri_edge.imaging import confounds as strategies

    kept_idx = np.arange(n_vol) if kept is None else kept
    trials, keep, skipped = cut_trials(times[kept_idx], signals, ev, window, bold)
    lost, drop = strategies.scrub_trials(times, kept_idx, ev.onset[keep], window.offsets())
    scrubbed = {
        "strategy": opts.confounds_strategy.name,
        "volumes": int(n_vol),
        "censored": int(n_vol - len(kept_idx)),
        "trials_dropped": int(drop.sum()),
        "trials_interpolated": int(((lost > 0) & ~drop).sum()),
    }
    keep, trials, lost = keep[~drop], trials[~drop], lost[~drop]
    return RunResult(
        bold,
        ev.path,
        trials,
        ev.onset[keep],
        ev.trial_type[keep],
        n_vol,
        tr,
        skipped,
        notes,
        None if lab is None else lab.take(keep),
        scrubbed,
        lost,
    )


# ---- output ----------------------------------------------------------------------------------------------


def save_trials(
    path: str | Path,
    results: list[RunResult],
    force: bool = False,
    window: Window | None = None,
    atlas: "Atlas | None" = None,
) -> Path:
    """Write runs' trials, concatenated in the given (run) order, as an ``.npz`` that ``predict``
    reads: ``data`` (N, R, T) float32, ``onset`` (N,) float64 seconds, ``trial_type`` (N,) unicode,
    ``run`` (N,) 1-based index into ``runs`` (M,) unicode (the BOLD file names). Atomic: the file
    appears complete or not at all. Trials are numbered 1 … N in this order by ``predict``."""
    from fmri_edge.files import check_new, replace_atomically

    path = Path(path)
    if path.suffix != ".npz":
        raise UsageError(f"--out {path}: give an .npz file name (e.g. trials.npz)")
    check_new(path, force)
    data = (
        np.concatenate([r.trials for r in results]) if results else np.empty((0, 0, 0), np.float32)
    )
    arrays = {
        "data": np.ascontiguousarray(data, dtype=np.float32),
        "onset": np.concatenate([r.onset for r in results]).astype(np.float64),
        "trial_type": np.asarray(
            np.concatenate([r.trial_type for r in results]).tolist(), dtype=str
        ),
        "run": np.concatenate(
            [np.full(len(r.trials), i + 1, dtype=np.int64) for i, r in enumerate(results)]
        ),
        "runs": np.asarray([r.bold.name for r in results], dtype=str),
    }
    if any(
        r.scrubbed_volumes is not None for r in results
    ):  # --confounds-strategy: censored volumes per trial
        arrays["scrubbed_volumes"] = np.concatenate(
            [
                np.zeros(len(r.trials), np.int64)
                if r.scrubbed_volumes is None
                else r.scrubbed_volumes
                for r in results
            ]
        ).astype(np.int64)
    if (
        window is not None
    ):  # the window the trials were cut with: predict warns when a model's differs
        arrays["baseline_s"], arrays["n_times"] = (
            np.float64(window.baseline_s),
            np.int64(window.n_times),
        )
    if (
        atlas is not None
    ):  # which atlas made them (fmri_edge.imaging.atlas_provenance): predict warns on another model's
        from fmri_edge.imaging import atlas_provenance

        arrays[atlas_provenance.ATLAS_KEY] = atlas_provenance.as_array(
            atlas_provenance.provenance(atlas)
        )
    with replace_atomically(path, binary=True) as f:
        np.savez(f, **arrays)
    return path
