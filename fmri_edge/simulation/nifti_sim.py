"""Small synthetic NIfTI studies for ``fmri-edge extract``: a label atlas, 4-D BOLD, events.

Needs nibabel (the ``nifti`` extra), imported lazily. Nothing here resembles a real brain: the
atlas is a grid of cubes, one per label (label v = region v − 1), and each region's mean BOLD is a
known function of time (:meth:`SimRun.planted`), so extraction can be checked exactly. Voxels
inside a region differ (a fixed spatial pattern and noise), but their deviations sum to zero at
every volume, so the region mean is the planted value.

Planted mean of region r at time t (seconds from the start of the scan)::

    level_r · (1 + 0.01 · sin(2π t / period_r + phase_r) + Σ_events effect · valence · bump(t − onset))

with the event term only in ``signal_regions`` and ``bump(s) = exp(−((s − 8) / 4)²)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmri_edge.simulation.simulate import EMOTION_REGIONS

VALENCE_NAMES = {-1: "negative", 0: "neutral", 1: "positive"}
BLOCK = 2  # voxels per cube edge, per label, on the BOLD grid
VOXEL_MM = 3.0
TASK = "emotion"
SPACE = "MNI152NLin2009cAsym"


def grid_shape(n_regions: int) -> tuple[int, int, int]:
    """Smallest cube of BLOCK³-voxel cubes holding n_regions labels (246 → 14×14×14 voxels)."""
    k = int(np.ceil(n_regions ** (1 / 3)))
    return (k * BLOCK,) * 3


def _affine(voxel_mm: float) -> np.ndarray:
    a = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    a[:3, 3] = -20.0  # the same world origin for every grid: voxel centres nest
    return a


def atlas_array(n_regions: int = 246, upsample: int = 1) -> np.ndarray:
    """Labels 1 … n_regions as cubes (BLOCK·upsample voxels a side), 0 elsewhere. As in the
    Brainnetome atlas, odd labels are left-hemisphere regions and label 2k − 1's partner 2k sits at
    the mirrored place in the right half (x, the first axis, grows to the right), so the atlas passes
    :func:`fmri_edge.imaging.space.check_hemispheres`; when the left half has too few cubes, labels fill
    the grid in order."""
    shape = grid_shape(n_regions)
    k = shape[0] // BLOCK
    cubes = np.zeros((k, k, k), dtype=np.int16)
    left = [(i, j, m) for i in range(k // 2) for j in range(k) for m in range(k)]
    n_pairs = (n_regions + 1) // 2
    if n_pairs <= len(left):
        for p, (i, j, m) in enumerate(left[:n_pairs]):
            cubes[i, j, m] = 2 * p + 1
            if 2 * p + 2 <= n_regions:
                cubes[k - 1 - i, j, m] = 2 * p + 2
    else:
        cubes.ravel()[:n_regions] = np.arange(1, n_regions + 1)
    return np.kron(cubes, np.ones((BLOCK * upsample,) * 3, dtype=np.int16)).astype(np.int16)


def write_atlas(path: str | Path, n_regions: int = 246, upsample: int = 1) -> Path:
    """The synthetic atlas; ``upsample=2`` writes it on a grid twice as fine (another shape than the
    BOLD's, as a 1 mm atlas is for 2 mm BOLD), which extract resamples."""
    import nibabel as nib

    img = nib.Nifti1Image(atlas_array(n_regions, upsample), _affine(VOXEL_MM / upsample))
    img.header.set_xyzt_units("mm")
    path = Path(path)
    nib.save(img, str(path))
    return path


@dataclass
class SimRun:
    bold: Path
    events: Path
    tr: float
    n_volumes: int
    onsets: np.ndarray
    valence: np.ndarray
    level: np.ndarray  # (R,)
    period: np.ndarray  # (R,)
    phase: np.ndarray  # (R,)
    signal_regions: tuple
    effect: float

    def planted(self, t) -> np.ndarray:
        """Planted region means at times ``t`` (seconds) → (len(t), R)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        rel = 0.01 * np.sin(2 * np.pi * t[:, None] / self.period[None] + self.phase[None])
        bump = np.exp(-((((t[:, None] - self.onsets[None]) - 8.0) / 4.0) ** 2)) @ (
            self.effect * self.valence
        )
        rel[:, list(self.signal_regions)] += bump[:, None]
        return self.level[None] * (1 + rel)


def write_run(
    bold: str | Path,
    events: str | Path,
    n_regions: int = 246,
    tr: float = 2.0,
    n_events: int = 6,
    first_onset: float = 9.3,
    spacing: float = 31.3,
    tail_s: float = 22.0,
    seed: int = 0,
    effect: float = 0.02,
    signal_regions=EMOTION_REGIONS,
    volume_noise: float = 0.002,
) -> SimRun:
    """One run: 4-D float32 BOLD (TR ``tr``, volume k at k·tr) and its BIDS events.tsv, onsets
    ``first_onset + i · spacing`` (not multiples of the TR by default)."""
    rng = np.random.default_rng(seed)
    onsets = first_onset + spacing * np.arange(n_events)
    valence = rng.permutation(np.resize([-1, 0, 1], n_events)).astype(np.float64)
    n_vol = int(np.ceil((onsets[-1] + tail_s) / tr)) + 1
    run = SimRun(
        Path(bold),
        Path(events),
        float(tr),
        n_vol,
        onsets,
        valence,
        rng.uniform(400, 14_000, n_regions),
        rng.uniform(20, 60, n_regions),
        rng.uniform(0, 2 * np.pi, n_regions),
        tuple(signal_regions),
        effect,
    )
    write_bold(run.bold, run.planted(np.arange(n_vol) * tr), tr, rng, volume_noise)
    write_events(
        run.events,
        {
            "onset": [f"{o:.3f}" for o in onsets],
            "duration": ["15.0"] * n_events,
            "trial_type": [VALENCE_NAMES[int(v)] for v in valence],
        },
    )
    return run


def write_bold(
    path: Path, means: np.ndarray, tr: float, rng: np.random.Generator, volume_noise: float = 0.002
) -> Path:
    """Region means (V, R) → a 4-D NIfTI on the synthetic atlas's grid whose region means they are:
    each voxel's deviation from its region's mean (a fixed pattern plus noise per volume) sums to
    zero inside the region at every volume."""
    import nibabel as nib

    n_vol, n_regions = means.shape
    labels = atlas_array(n_regions).ravel()
    inside = labels > 0
    region = labels[inside] - 1
    counts = np.bincount(region, minlength=n_regions)
    dev = rng.normal(scale=0.05, size=(n_vol, region.size)) + rng.normal(
        scale=volume_noise, size=(n_vol, region.size)
    )
    dev -= (np.stack([np.bincount(region, weights=d, minlength=n_regions) for d in dev]) / counts)[
        :, region
    ]
    vox = np.zeros((n_vol, labels.size), dtype=np.float64)
    vox[:, inside] = means[:, region] * (1 + dev)
    vox[:, ~inside] = 50.0
    data = vox.T.reshape(*grid_shape(n_regions), n_vol).astype(np.float32)
    img = nib.Nifti1Image(data, _affine(VOXEL_MM))
    img.header.set_zooms((VOXEL_MM,) * 3 + (float(tr),))
    img.header.set_xyzt_units("mm", "sec")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_events(path: Path, columns: dict[str, list[str]]) -> Path:
    """A BIDS events.tsv from columns of already formatted strings (``onset`` first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = zip(*columns.values())
    path.write_text("\t".join(columns) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def write_confounds(path: str | Path, n_volumes: int, seed: int = 0) -> Path:
    """An fMRIPrep-like confounds TSV (motion parameters and their derivatives, 'n/a' first row)."""
    rng = np.random.default_rng(seed)
    cols = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    motion = np.cumsum(rng.normal(scale=0.01, size=(n_volumes, 6)), axis=0)
    deriv = np.vstack([np.full((1, 6), np.nan), np.diff(motion, axis=0)])
    header = cols + [c + "_derivative1" for c in cols]
    lines = ["\t".join(header)]
    for m, d in zip(motion, deriv):
        lines.append(
            "\t".join([f"{x:.6f}" for x in m] + ["n/a" if np.isnan(x) else f"{x:.6f}" for x in d])
        )
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bids(
    root: str | Path,
    n_subjects: int = 2,
    n_runs: int = 2,
    n_regions: int = 246,
    tr: float = 2.0,
    n_events: int = 6,
    seed: int = 0,
) -> dict[str, list[SimRun]]:
    """A tiny BIDS study: raw events in ``root/sub-XX/func/``, fMRIPrep-named preprocessed BOLD and
    confounds in ``root/derivatives/fmriprep/sub-XX/func/``."""
    root = Path(root)
    runs: dict[str, list[SimRun]] = {}
    for s in range(1, n_subjects + 1):
        sub = f"sub-{s:02d}"
        for r in range(1, n_runs + 1):
            stem = f"{sub}_task-{TASK}_run-{r}"
            deriv = root / "derivatives" / "fmriprep" / sub / "func"
            run = write_run(
                deriv / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz",
                root / sub / "func" / f"{stem}_events.tsv",
                n_regions,
                tr,
                n_events,
                first_onset=9.3 + 1.1 * r,
                seed=seed + 100 * s + r,
            )
            write_confounds(
                deriv / f"{stem}_desc-confounds_timeseries.tsv", run.n_volumes, seed=seed + s + r
            )
            runs.setdefault(sub, []).append(run)
    (root / "dataset_description.json").write_text(
        '{"Name": "fmri-edge synthetic study", "BIDSVersion": "1.8.0"}\n'
    )
    return runs


# ---- a labeled study: what a lab brings to `extract --class-column … ` and `train --data` ----------------

STUDY_TASK = "affect"
CONDITION_CODES = {
    -1: "img_neg",
    0: "img_neu",
    1: "img_pos",
}  # the class column holds codes, not classes
RATING_SCALE = (1, 9)  # the participants' own scale, 5 = neutral


@dataclass
class SimParticipant:
    participant: str
    runs: list[SimRun]
    valence: np.ndarray  # (N,) the planted class of every class-coded event, runs in order
    rating: np.ndarray  # (N,) float, 1 … 9, NaN where the events file says n/a
    gain: float  # this participant's signal gain (0 in a null study)
    scale: float  # this participant's scanner gain on every region's BOLD level


def write_labeled_study(
    root: str | Path,
    n_subjects: int = 10,
    n_runs: int = 2,
    n_events: int = 12,
    tr: float = 1.5,
    null: bool = False,
    seed: int = 0,
    effect: float = 0.02,
    noise: float = 0.01,
    n_regions: int = 246,
    signal_regions=EMOTION_REGIONS,
    missing_rating: float = 0.05,
    individual: bool = False,
    confounds: bool = False,
) -> dict[str, SimParticipant]:
    """A labeled BIDS study as a lab holds it, with a planted class signal (none with ``null``).

    - ``root/derivatives/fmriprep/sub-XX/func/*_desc-preproc_bold.nii.gz``: BOLD at TR ``tr``;
    - events with ``onset``, ``duration``, ``trial_type`` (condition codes ``img_neg``, ``img_neu``,
      ``img_pos``, plus one unlabeled ``catch`` event per run), ``rating`` (1 … 9, ``n/a`` for a
      fraction ``missing_rating``) and ``response_time``. Odd participants keep them in
      ``sub-XX/func/``, even ones at the study root (as ds000205 does): both are found by BIDS inheritance;
    - ``participants.tsv`` (``participant_id``, ``site``: A for the first half, B for the rest).

    Every participant has its own BOLD baseline per region (the study's levels × a per-region
    factor × a scanner gain ``scale``) and its own signal gain ``gain``. Events start 27–33 s
    apart at onsets between volumes, so a 25-s window holds one event. The planted response in
    ``signal_regions``, as a fraction of the region's level, is ``gain · effect · (valence + 0.25 ·
    (rating − 5) / 4) · bump(t − onset)``, with ``bump(s) = exp(−((s − 8) / 4)²)``; every region
    also carries AR(1) noise of standard deviation ``noise`` per volume and a slow drift.

    ``individual``: every participant has its own pattern instead (a within-participant signal not
    shared across participants): 24 regions drawn for that participant, and for each class its own
    random ±1 pattern over them, ``gain · effect · pattern[class] · bump(t − onset)``; the ratings
    are not planted. ``confounds``: an fMRIPrep-like ``*_desc-confounds_timeseries.tsv`` (+ .json)
    beside each BOLD (:func:`write_fmriprep_confounds`): motion, its derivatives, FD with a few
    spikes above 0.5 mm, std_dvars, csf, white_matter, global_signal, cosine regressors. Both
    draw from their own random streams: the other files are the same as without them."""
    root = Path(root)
    rng0 = np.random.default_rng(seed)
    levels = rng0.uniform(400, 14_000, n_regions)
    lo, hi = RATING_SCALE
    out: dict[str, SimParticipant] = {}
    for s in range(1, n_subjects + 1):
        sub = f"sub-{s:02d}"
        rng = np.random.default_rng([seed, s])
        scale, gain = rng.uniform(0.6, 1.6), 0.0 if null else rng.uniform(0.5, 1.5)
        level = levels * np.exp(rng.normal(scale=0.2, size=n_regions)) * scale
        runs, valences, ratings = [], [], []
        for r in range(1, n_runs + 1):
            stem = f"{sub}_task-{STUDY_TASK}_run-{r}"
            onsets = rng.uniform(8, 12) + np.concatenate(
                [[0], np.cumsum(rng.uniform(27, 33, n_events - 1))]
            )
            valence = rng.permutation(np.resize([-1, 0, 1], n_events)).astype(np.float64)
            rating = np.where(
                valence == 0,
                5 + rng.integers(-1, 2, n_events),
                5 + valence * rng.integers(1, 5, n_events),
            ).astype(np.float64)
            n_vol = int(np.ceil((onsets[-1] + 22.0) / tr)) + 1
            t = np.arange(n_vol) * tr
            amplitude = gain * effect * (valence + 0.25 * (rating - 5) / 4)
            bump = np.exp(-((((t[:, None] - onsets[None]) - 8.0) / 4.0) ** 2)) @ amplitude  # (V,)
            ar = np.zeros((n_vol, n_regions))
            eps = rng.normal(scale=noise * np.sqrt(1 - 0.7**2), size=ar.shape)
            ar[0] = rng.normal(scale=noise, size=n_regions)
            for k in range(1, n_vol):
                ar[k] = 0.7 * ar[k - 1] + eps[k]
            rel = ar + 0.01 * np.sin(
                2 * np.pi * t[:, None] / rng.uniform(60, 200, n_regions)
                + rng.uniform(0, 6.3, n_regions)
            )
            if individual:  # the participant's own pattern per class (its own random stream)
                prng = np.random.default_rng([seed, s, 31])
                regions = prng.choice(n_regions, 24, replace=False)
                pattern = prng.choice([-1.0, 1.0], size=(3, 24))
                bumps = np.exp(-((((t[:, None] - onsets[None]) - 8.0) / 4.0) ** 2))  # (V, E)
                rel[:, regions] += gain * effect * bumps @ pattern[valence.astype(int) + 1]
            else:
                rel[:, list(signal_regions)] += bump[:, None]
            bold = (
                root
                / "derivatives"
                / "fmriprep"
                / sub
                / "func"
                / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz"
            )
            write_bold(bold, level[None] * (1 + rel), tr, rng)
            if confounds:
                write_fmriprep_confounds(bold, n_vol, np.random.default_rng([seed, s, r, 53]))
            catch = (
                onsets[rng.integers(0, n_events - 1)] + 14.0 + rng.uniform(0, 2)
            )  # between two events
            shown = rating.copy()
            shown[rng.random(n_events) < missing_rating] = np.nan
            order = np.argsort(np.append(onsets, catch), kind="stable")
            cols = {
                "onset": np.append(onsets, catch)[order],
                "duration": np.full(n_events + 1, 4.0),
                "trial_type": np.append([CONDITION_CODES[int(v)] for v in valence], "catch")[order],
                "rating": np.append(shown, np.nan)[order],
                "response_time": np.append(rng.uniform(0.6, 2.5, n_events), np.nan)[order],
            }
            events = (root / sub / "func" if s % 2 else root) / f"{stem}_events.tsv"
            write_events(
                events,
                {
                    "onset": [f"{o:.3f}" for o in cols["onset"]],
                    "duration": [f"{d:g}" for d in cols["duration"]],
                    "trial_type": list(cols["trial_type"]),
                    "rating": ["n/a" if np.isnan(v) else f"{v:g}" for v in cols["rating"]],
                    "response_time": [
                        "n/a" if np.isnan(v) else f"{v:.3f}" for v in cols["response_time"]
                    ],
                },
            )
            runs.append(
                SimRun(
                    bold,
                    events,
                    float(tr),
                    n_vol,
                    onsets,
                    valence,
                    level,
                    np.zeros(n_regions),
                    np.zeros(n_regions),
                    tuple(signal_regions),
                    gain * effect,
                )
            )
            valences.append(valence)
            ratings.append(shown)
        out[sub] = SimParticipant(
            sub, runs, np.concatenate(valences), np.concatenate(ratings), gain, scale
        )
    assert lo < 5 < hi
    half = (n_subjects + 1) // 2
    (root / "participants.tsv").write_text(
        "participant_id\tsite\n"
        + "".join(f"{p}\t{'A' if i < half else 'B'}\n" for i, p in enumerate(out))
    )
    (root / "dataset_description.json").write_text(
        '{"Name": "fmri-edge synthetic labeled study'
        + (" (null: no signal)" if null else "")
        + '", "BIDSVersion": "1.8.0"}\n'
    )
    return out


def write_fmriprep_confounds(
    bold: str | Path, n_vol: int, rng: np.random.Generator, spikes: int = 3
) -> Path:
    """An fMRIPrep-like confounds file (and its JSON sidecar) beside ``bold``: the columns nilearn's
    ``load_confounds_strategy`` reads for ``simple`` and ``scrubbing`` (motion and its derivatives
    and squares, ``framewise_displacement`` with ``spikes`` volumes above 0.5 mm, ``std_dvars``,
    ``csf``, ``white_matter``, ``global_signal`` (+ derivatives), ``cosine00``…), ``n/a`` in the
    first row of derivatives as fMRIPrep writes it."""
    cols: dict[str, np.ndarray] = {}
    for k in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"):
        cols[k] = np.cumsum(rng.normal(scale=0.02, size=n_vol))
    fd = np.abs(rng.normal(scale=0.08, size=n_vol)) + 0.05
    at = (
        rng.choice(np.arange(12, n_vol - 12), spikes, replace=False)
        if n_vol > 30
        else np.array([], int)
    )
    fd[at] = rng.uniform(0.6, 1.5, len(at))
    fd[0] = np.nan
    cols["framewise_displacement"] = fd
    dv = rng.normal(1.0, 0.1, n_vol)
    dv[0] = np.nan
    cols["std_dvars"] = dv
    for k in ("csf", "white_matter", "global_signal"):
        cols[k] = rng.normal(scale=1.0, size=n_vol)
    out: dict[str, np.ndarray] = {}
    for k, v in cols.items():
        out[k] = v
        if k in ("framewise_displacement", "std_dvars"):
            continue
        d = np.concatenate([[np.nan], np.diff(v)])
        out[f"{k}_derivative1"] = d
        out[f"{k}_power2"] = v**2
        out[f"{k}_derivative1_power2"] = d**2
    t = np.arange(n_vol)
    for j in range(3):
        out[f"cosine{j:02d}"] = np.sqrt(2 / n_vol) * np.cos(
            np.pi * (2 * t + 1) * (j + 1) / (2 * n_vol)
        )
    from fmri_edge.imaging.bids import confounds_beside

    path = confounds_beside(bold)
    names = list(out)
    lines = ["\t".join(names)] + [
        "\t".join("n/a" if np.isnan(out[k][i]) else f"{out[k][i]:.6f}" for k in names)
        for i in range(n_vol)
    ]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text("{}\n")
    return path
