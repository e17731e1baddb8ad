"""BOLD-like trials with a planted valence signal, for tests and for trying fmri-edge without data.

Each simulated trial mimics the ICBHI layout: ``n_regions`` region time courses of ``n_times``
seconds — ``baseline_s`` seconds of fixation, then a video block whose haemodynamic response
(a gamma-shaped HRF convolved with the block) rises in the ``signal_regions`` for positive
valence, falls for negative valence and stays flat for neutral trials. On top: a raw BOLD level
per subject and region (about 400 … 14 000, as in the real data), slow drift, AR(1) noise.
Nothing here is fitted to real data; it only has the real data's shape, scale and structure.
"""

from __future__ import annotations

import numpy as np

EMOTION_REGIONS = (14, 15, 86, 87)  # A9/46d_L, A9/46d_R, aSTS_L, aSTS_R in the Brainnetome atlas


def hrf(n_times: int) -> np.ndarray:
    """Canonical-like single-gamma haemodynamic response sampled at 1 s, peak near 5 s."""
    t = np.arange(n_times, dtype=float)
    h = t**5 * np.exp(-t)
    return h / h.max()


def simulate(
    n_trials: int = 30,
    n_regions: int = 246,
    n_times: int = 25,
    *,
    signal_regions=EMOTION_REGIONS,
    effect: float = 0.02,
    noise: float = 0.004,
    n_subjects: int = 1,
    baseline_s: int = 5,
    video_s: int = 15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``trials`` (N, n_regions, n_times) float32 raw BOLD, ``labels`` (N, 2) int
    [CLASS, LEVEL] and ``subject`` (N,) int, with N = n_trials × n_subjects.

    ``effect`` and ``noise`` are fractions of each region's BOLD level (0.02 = 2 % signal change).
    """
    rng = np.random.default_rng(seed)
    block = np.zeros(n_times)
    block[baseline_s : baseline_s + video_s] = 1.0
    response = np.convolve(block, hrf(n_times))[:n_times]
    response /= response.max()
    trials, labels, subjects = [], [], []
    for s in range(n_subjects):
        level = rng.uniform(400, 14_000, size=n_regions)  # raw BOLD per region
        valence = rng.permutation(np.resize([-1, 0, 1], n_trials))
        rating = np.where(
            valence == 0,
            rng.choice([-1, 0, 0, 1], n_trials),
            valence * rng.integers(1, 5, n_trials),
        )
        ar = np.zeros((n_trials, n_regions, n_times))
        eps = rng.normal(size=ar.shape)
        for t in range(n_times):
            ar[..., t] = (0.6 * ar[..., t - 1] if t else 0) + eps[..., t]
        drift = rng.normal(scale=noise, size=(n_trials, n_regions, 1)) * np.linspace(-1, 1, n_times)
        signal = np.zeros((n_trials, n_regions, n_times))
        amplitude = effect * (valence + 0.1 * np.sign(rating) * np.abs(rating) / 4)
        signal[:, list(signal_regions), :] = amplitude[:, None, None] * response
        x = level[None, :, None] * (1 + signal + drift + noise * ar)
        trials.append(x.astype(np.float32))
        labels.append(np.stack([valence, rating], axis=1))
        subjects.append(np.full(n_trials, s))
    return np.concatenate(trials), np.concatenate(labels).astype(np.int64), np.concatenate(subjects)
