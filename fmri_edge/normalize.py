"""Subject-wise normalization (numpy only): each region scaled by statistics of the same
participant's trials — all its trials and seconds together, no labels — so it is fair at test time
as long as all trials of a participant are normalized together.

Applied outside the network, per participant, before the model's in-graph per-trial normalization.
"""
from __future__ import annotations

import numpy as np

SUBJECT_NORMS = ("none", "zscore", "center")
EPS = 1e-6


class SubjectStats:
    """Subject-wise normalization in two passes that can be streamed: per-region mean and
    standard deviation over every trial and second seen by :meth:`add` (float64, chunks merged
    with Chan et al.'s pairwise update), then :meth:`apply` to each chunk."""

    def __init__(self, mode: str):
        if mode not in SUBJECT_NORMS:
            raise ValueError(f"unknown subject normalization {mode!r}; choose from {SUBJECT_NORMS}")
        self.mode, self.n, self.mean, self.m2 = mode, 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        y = np.array(x, dtype=np.float64)  # in-place arithmetic below: half the time of temporaries
        n = y.shape[0] * y.shape[2]
        mean = y.sum(axis=2).sum(axis=0) / n
        y -= mean[None, :, None]
        np.square(y, out=y)
        m2 = y.sum(axis=2).sum(axis=0)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.n * n / total)
        self.n = total

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return np.asarray(x, dtype=np.float32)
        y = np.array(x, dtype=np.float64)
        y -= self.mean[None, :, None]
        if self.mode == "zscore":
            y /= (np.sqrt(self.m2 / self.n) + EPS)[None, :, None]
        return y.astype(np.float32)


def subject_normalize(trials: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """(N, regions, T) trials of ONE participant → same shape, float32.

    - ``zscore``: per region, minus its mean and divided by its std over all N·T samples;
    - ``center``: per region, minus its mean over all N·T samples;
    - ``none``: unchanged.
    """
    stats = SubjectStats(mode)
    if mode != "none":
        stats.add(trials)
    return stats.apply(trials)


def normalize_by_participant(trials: np.ndarray, participants: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """Apply :func:`subject_normalize` to each participant's trials separately."""
    out = np.empty(trials.shape, dtype=np.float32)
    participants = np.asarray(participants)
    for p in np.unique(participants):
        m = participants == p
        out[m] = subject_normalize(trials[m], mode)
    return out
