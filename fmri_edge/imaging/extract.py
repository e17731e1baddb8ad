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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.imaging.events import (
    LABEL_FILE,
    Events,
    Labeled,
    LabelSpec,
    check_columns,
    check_study,
    label_events,
    read_events,
    save_labels,
)
from fmri_edge.data.io import DATA_FILE
from fmri_edge.errors import InputError, UsageError
from fmri_edge.imaging.atlas import Atlas, label_ranges
from fmri_edge.imaging.bids import BidsRun, events_name, find_bids_runs
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
            labels, first.mean(axis=3), bold.affine, atlas.path, bold.path
        )  # the atlas on the brain
        return np.concatenate([index.means(block) for block in itertools.chain([first], blocks)])
    data = volumes.read_image(bold, "BOLD image")
    space.check_on_brain(
        labels,
        data[..., : volumes.DEFAULT_BLOCK_VOLUMES].mean(axis=3),
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


# ---- BIDS studies -----------------------------------------------------------------------------------------


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


def extract_bids(
    root: str | Path,
    atlas: Atlas,
    out_dir: str | Path,
    window: Window,
    opts: ExtractOptions | None = None,
    task: str | None = None,
    space: str | None = None,
    force: bool = False,
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
    runs = (
        runs
        if runs is not None
        else find_bids_runs(root, task, space, confounds=opts.confounds == "auto")
    )
    if opts.labels is not None and labeled is None:
        labeled = label_study(runs, window, opts)
    extract = extract or (
        lambda r, events: extract_run(r.bold, atlas, events, window, opts, r.confounds)
    )
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
            if r.duplicate_of is not None:  # never the same run twice in a participant's trials
                failed.append(
                    InputError(
                        r.bold,
                        f"the same run as {r.duplicate_of.name}, which is read; this "
                        "copy is not (remove one of them)",
                        outcome="ignored",
                    )
                )
                on_run and on_run(r, failed[-1])
                continue

            def one(r=r):
                if r.events is None:
                    raise InputError(
                        r.bold,
                        f"no events file {events_name(r.bold)} found (looked in "
                        f"{', '.join(str(p) for p in r.searched[:3])} …)",
                    )
                return extract(r, run_events(r, labeled))

            res = _attempt(r.bold, one)
            (failed if isinstance(res, InputError) else done).append(res)
            on_run and on_run(r, res)
        written = None
        if any(len(x.trials) for x in done):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                written = save_trials(
                    target,
                    [x for x in done if len(x.trials)],
                    force=force,
                    window=window,
                    atlas=atlas,
                )
                if opts.labels is not None:
                    labs = [x.labels for x in done if len(x.trials)]
                    save_labels(
                        target.parent / LABEL_FILE,
                        *(
                            np.concatenate([getattr(lab, a) for lab in labs])
                            for a in ("valence_class", "valence_level", "level_rated")
                        ),
                    )
            except OSError as e:  # a file where the folder goes, a full disk: this participant only
                failed.append(
                    InputError(target, f"cannot be written ({e.strerror or type(e).__name__})")
                )
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
        return (
            f"every event of its runs was dropped before cutting ({why}); nothing written for this "
            "participant (check --class-map and --min-gap)"
        )
    return "no event of any run fits inside its scan; nothing written for this participant"


def run_events(run: BidsRun, labeled: dict[Path, Labeled | InputError] | None) -> Path | Labeled:
    """What :func:`extract_run` reads a run's trials from: its events file, or its labeled events
    (raises the :class:`InputError` that refused its labels)."""
    events = run.events if labeled is None else labeled[run.bold]
    if isinstance(events, InputError):
        raise events
    return events


def to_write(
    runs: dict[str, list[BidsRun]],
    out_dir: str | Path,
    force: bool,
    labeled: dict[Path, Labeled | InputError] | None = None,
) -> list[BidsRun]:
    """The runs :func:`extract_bids` will extract: those of participants whose output may be
    written, that have an events file (and labels, when asked)."""
    return [
        r
        for participant, prs in runs.items()
        if force or not (Path(out_dir) / participant / DATA_FILE).exists()
        for r in prs
        if r.events is not None
        and r.duplicate_of is None
        and not (labeled is not None and isinstance(labeled.get(r.bold), InputError))
    ]


# ---- on a Dask cluster (the dask extra) -------------------------------------------------------------------

_worker_atlases: dict[tuple, Atlas] = {}


def run_task(
    run: BidsRun,
    events: Path | Labeled,
    atlas_path: str,
    n_regions: int,
    window: Window,
    opts: ExtractOptions,
) -> RunResult | InputError:
    """One run on a Dask worker: its result, or the :class:`InputError` saying why it cannot be used
    (returned, not raised: a bad run is reported, never retried). The worker reads the atlas
    itself, once per process (workers need the inputs at the same paths as the client)."""

    def one():
        path = Path(atlas_path)
        key = (
            str(path),
            n_regions,
            *((path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else ()),
        )
        if key not in _worker_atlases:
            _worker_atlases[key] = Atlas(path, n_regions)
        return extract_run(run.bold, _worker_atlases[key], events, window, opts, run.confounds)

    return _attempt(run.bold, one)


def extract_bids_on(
    address: str,
    root: str | Path,
    atlas: Atlas,
    out_dir: str | Path,
    window: Window,
    opts: ExtractOptions | None = None,
    force: bool = False,
    on_run: Callable[[BidsRun, RunResult | InputError], None] | None = None,
    runs: dict[str, list[BidsRun]] | None = None,
    labeled: dict[Path, Labeled | InputError] | None = None,
) -> list[ParticipantResult]:
    """:func:`extract_bids` with the runs extracted by the workers of a Dask scheduler
    (``tcp://host:8786``) or of a local cluster of N processes (``local:N``): every run is submitted
    at once, the client collects the results in run order and writes each participant's file as
    :func:`extract_bids` does (the same files, the same reports)."""
    from fmri_edge import scheduler

    opts = opts or ExtractOptions()
    runs = runs if runs is not None else find_bids_runs(root, confounds=opts.confounds == "auto")
    if opts.labels is not None and labeled is None:
        labeled = label_study(runs, window, opts)
    distributed = scheduler.load_distributed()
    with scheduler.connect(address) as (client, _):
        futures = {
            r.bold: client.submit(
                run_task,
                r,
                run_events(r, labeled),
                str(atlas.path.resolve()),
                atlas.n_regions,
                window,
                opts,
                pure=False,
            )
            for r in to_write(runs, out_dir, force, labeled)
        }

        def collect(run: BidsRun, events) -> RunResult:
            result = scheduler.result(futures.pop(run.bold), address, distributed)
            if isinstance(result, InputError):
                raise result
            return result

        return extract_bids(
            root,
            atlas,
            out_dir,
            window,
            opts,
            force=force,
            on_run=on_run,
            runs=runs,
            labeled=labeled,
            extract=collect,
        )


def label_study(
    runs: dict[str, list[BidsRun]], window: Window, opts: ExtractOptions
) -> dict[Path, Labeled | InputError]:
    """Every run's events labeled before any image is read: {BOLD: labeled events, or the
    :class:`InputError` that refuses that run (its events file lacks a column)}. A problem that is
    the study's (a class-map value that occurs nowhere, a column no file has, a rating outside the
    scale) raises, so nothing is extracted under a wrong option."""
    out: dict[Path, Labeled | InputError] = {}
    for prs in runs.values():
        for r in prs:
            if r.events is None:
                continue
            try:  # a damaged events file (empty, header only, malformed) refuses its run only
                ev = read_events(r.events, opts.trial_types)
                check_columns(ev, opts.labels)
            except InputError as e:
                out[r.bold] = e
                continue
            out[r.bold] = run_labels(ev, window, opts)
    if (
        not out
    ):  # no run has an events file: say where they were looked for (as the unlabeled path does)
        first = next((r for prs in runs.values() for r in prs), None)
        if first is not None:
            raise InputError(
                first.bold,
                f"no events file {events_name(first.bold)} found for any run (looked in "
                f"{', '.join(str(p) for p in first.searched[:3])} …); labels come from "
                "each run's BIDS *_events.tsv",
            )
    check_study(out, opts.labels)
    return out


def labels_summary(
    results: list[ParticipantResult], spec: LabelSpec, window: Window, root: Path
) -> dict:
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
            "trials": int(len(cls)),
            **{f"CLASS {c:+d}" if c else "CLASS 0": int((cls == c).sum()) for c in (-1, 0, 1)},
            "rated": int(sum(r.labels.level_rated.sum() for r in kept)),
            "overlapping": over,
            "runs": [
                {"bold": str(r.bold), "events": str(r.events), "trials": len(r.trials)}
                for r in kept
            ],
        }
        scrub = [r.scrubbed for r in p.runs if r.scrubbed]
        if scrub:  # --confounds-strategy: what was censored and what it cost this participant
            participants[p.participant]["scrubbing"] = {
                k: sum(x[k] for x in scrub)
                for k in ("volumes", "censored", "trials_dropped", "trials_interpolated")
            }
            n_scrubbed = participants[p.participant]["scrubbing"]["trials_dropped"]
            if n_scrubbed:
                dropped["window lost more than a quarter of its volumes to scrubbing"] += n_scrubbed
    single = [
        p
        for p, c in participants.items()
        if sum(c[k] > 0 for k in ("CLASS -1", "CLASS 0", "CLASS +1")) < 2
    ]
    return {
        "study": str(root),
        **spec.describe(),
        "window": {
            "n_regions": window.n_regions,
            "n_times": window.n_times,
            "baseline_s": window.baseline_s,
        },
        "participants": participants,
        "dropped": dict(dropped),
        "overlapping": {
            "trials": overlapping,
            "meaning": "trials whose window holds the onset of another kept "
            "event (fast event-related designs); drop them with --min-gap SECONDS",
        },
        "single_class_participants": single,
    }


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
