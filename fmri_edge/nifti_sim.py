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

from fmri_edge.simulate import EMOTION_REGIONS

VALENCE_NAMES = {-1: "negative", 0: "neutral", 1: "positive"}
BLOCK = 2                         # voxels per cube edge, per label, on the BOLD grid
VOXEL_MM = 3.0
TASK = "emotion"
SPACE = "MNI152NLin2009cAsym"


def grid_shape(n_regions: int) -> tuple[int, int, int]:
    """Smallest cube of BLOCK³-voxel cubes holding n_regions labels (246 → 14×14×14 voxels)."""
    k = int(np.ceil(n_regions ** (1 / 3)))
    return (k * BLOCK,) * 3


def _affine(voxel_mm: float) -> np.ndarray:
    a = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    a[:3, 3] = -20.0                # the same world origin for every grid: voxel centres nest
    return a


def atlas_array(n_regions: int = 246, upsample: int = 1) -> np.ndarray:
    """Labels 1 … n_regions as cubes (BLOCK·upsample voxels a side), 0 elsewhere."""
    shape = grid_shape(n_regions)
    k = shape[0] // BLOCK
    labels = np.zeros(k ** 3, dtype=np.int16)
    labels[:n_regions] = np.arange(1, n_regions + 1)
    cubes = labels.reshape(k, k, k)
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
    level: np.ndarray          # (R,)
    period: np.ndarray         # (R,)
    phase: np.ndarray          # (R,)
    signal_regions: tuple
    effect: float

    def planted(self, t) -> np.ndarray:
        """Planted region means at times ``t`` (seconds) → (len(t), R)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        rel = 0.01 * np.sin(2 * np.pi * t[:, None] / self.period[None] + self.phase[None])
        bump = np.exp(-(((t[:, None] - self.onsets[None]) - 8.0) / 4.0) ** 2) @ (self.effect * self.valence)
        rel[:, list(self.signal_regions)] += bump[:, None]
        return self.level[None] * (1 + rel)


def write_run(bold: str | Path, events: str | Path, n_regions: int = 246, tr: float = 2.0, n_events: int = 6,
              first_onset: float = 9.3, spacing: float = 31.3, tail_s: float = 22.0, seed: int = 0,
              effect: float = 0.02, signal_regions=EMOTION_REGIONS, volume_noise: float = 0.002) -> SimRun:
    """One run: 4-D float32 BOLD (TR ``tr``, volume k at k·tr) and its BIDS events.tsv, onsets
    ``first_onset + i · spacing`` (not multiples of the TR by default)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    onsets = first_onset + spacing * np.arange(n_events)
    valence = rng.permutation(np.resize([-1, 0, 1], n_events)).astype(np.float64)
    n_vol = int(np.ceil((onsets[-1] + tail_s) / tr)) + 1
    run = SimRun(Path(bold), Path(events), float(tr), n_vol, onsets, valence,
                 rng.uniform(400, 14_000, n_regions), rng.uniform(20, 60, n_regions),
                 rng.uniform(0, 2 * np.pi, n_regions), tuple(signal_regions), effect)
    means = run.planted(np.arange(n_vol) * tr)                       # (V, R)
    labels = atlas_array(n_regions).ravel()
    inside = labels > 0
    region = labels[inside] - 1
    counts = np.bincount(region, minlength=n_regions)
    # per-voxel deviations with zero mean inside each region: a fixed pattern plus noise per volume
    dev = rng.normal(scale=0.05, size=(n_vol, region.size)) + rng.normal(scale=volume_noise, size=(n_vol, region.size))
    dev -= (np.stack([np.bincount(region, weights=d, minlength=n_regions) for d in dev]) / counts)[:, region]
    vox = np.zeros((n_vol, labels.size), dtype=np.float64)
    vox[:, inside] = means[:, region] * (1 + dev)
    vox[:, ~inside] = 50.0
    data = vox.T.reshape(*grid_shape(n_regions), n_vol).astype(np.float32)
    img = nib.Nifti1Image(data, _affine(VOXEL_MM))
    img.header.set_zooms((VOXEL_MM,) * 3 + (float(tr),))
    img.header.set_xyzt_units("mm", "sec")
    run.bold.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(run.bold))
    run.events.parent.mkdir(parents=True, exist_ok=True)
    run.events.write_text("onset\tduration\ttrial_type\n" + "".join(
        f"{o:.3f}\t15.0\t{VALENCE_NAMES[int(v)]}\n" for o, v in zip(onsets, valence)))
    return run


def write_confounds(path: str | Path, n_volumes: int, seed: int = 0) -> Path:
    """An fMRIPrep-like confounds TSV (motion parameters and their derivatives, 'n/a' first row)."""
    rng = np.random.default_rng(seed)
    cols = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    motion = np.cumsum(rng.normal(scale=0.01, size=(n_volumes, 6)), axis=0)
    deriv = np.vstack([np.full((1, 6), np.nan), np.diff(motion, axis=0)])
    header = cols + [c + "_derivative1" for c in cols]
    lines = ["\t".join(header)]
    for m, d in zip(motion, deriv):
        lines.append("\t".join([f"{x:.6f}" for x in m] + ["n/a" if np.isnan(x) else f"{x:.6f}" for x in d]))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bids(root: str | Path, n_subjects: int = 2, n_runs: int = 2, n_regions: int = 246, tr: float = 2.0,
               n_events: int = 6, seed: int = 0) -> dict[str, list[SimRun]]:
    """A tiny BIDS study: raw events in ``root/sub-XX/func/``, fMRIPrep-named preprocessed BOLD and
    confounds in ``root/derivatives/fmriprep/sub-XX/func/``."""
    root = Path(root)
    runs: dict[str, list[SimRun]] = {}
    for s in range(1, n_subjects + 1):
        sub = f"sub-{s:02d}"
        for r in range(1, n_runs + 1):
            stem = f"{sub}_task-{TASK}_run-{r}"
            deriv = root / "derivatives" / "fmriprep" / sub / "func"
            run = write_run(deriv / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz",
                            root / sub / "func" / f"{stem}_events.tsv", n_regions, tr, n_events,
                            first_onset=9.3 + 1.1 * r, seed=seed + 100 * s + r)
            write_confounds(deriv / f"{stem}_desc-confounds_timeseries.tsv", run.n_volumes, seed=seed + s + r)
            runs.setdefault(sub, []).append(run)
    (root / "dataset_description.json").write_text('{"Name": "fmri-edge synthetic study", "BIDSVersion": "1.8.0"}\n')
    return runs
