"""Subject-wise normalization (numpy only): each region scaled by statistics of the same
participant's trials — all its trials and seconds together, no labels — so it is fair at test time
as long as all trials of a participant are normalized together.

Applied outside the network, per participant, before the model's in-graph per-trial normalization.
"""

from __future__ import annotations

import numpy as np

SUBJECT_NORMS = ("none", "zscore", "center")
EPS = 1e-6


class Moments:
    """Count, mean and sum of squared deviations of samples seen in chunks, merged with Chan et
    al.'s pairwise update (float64). Merging the same chunks in the same order gives the same
    numbers, bit for bit."""

    def __init__(self, n: int = 0, mean=0.0, m2=0.0):
        self.n, self.mean, self.m2 = n, mean, m2

    def merge(self, other: "Moments") -> None:
        """Add statistics computed elsewhere (another chunk, file or worker)."""
        if not other.n:
            return
        total = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / total)
        self.n = total

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n)


class SubjectStats(Moments):
    """Subject-wise normalization in two passes that can be streamed: per-region mean and
    standard deviation over every trial and second seen by :meth:`add`, then :meth:`apply` to
    each chunk."""

    def __init__(self, mode: str):
        if mode not in SUBJECT_NORMS:
            raise ValueError(f"unknown subject normalization {mode!r}; choose from {SUBJECT_NORMS}")
        super().__init__()
        self.mode = mode

    def add(self, x: np.ndarray) -> None:
        y = np.array(x, dtype=np.float64)  # in-place arithmetic below: half the time of temporaries
        n = y.shape[0] * y.shape[2]
        if not n:
            return
        mean = y.sum(axis=2).sum(axis=0) / n
        y -= mean[None, :, None]
        np.square(y, out=y)
        self.merge(Moments(n, mean, y.sum(axis=2).sum(axis=0)))

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return np.asarray(x, dtype=np.float32)
        y = np.array(x, dtype=np.float64)
        y -= self.mean[None, :, None]
        if self.mode == "zscore":
            y /= (self.std() + EPS)[None, :, None]
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


def normalize_by_participant(
    trials: np.ndarray, participants: np.ndarray, mode: str = "zscore"
) -> np.ndarray:
    """Apply :func:`subject_normalize` to each participant's trials separately."""
    out = np.empty(trials.shape, dtype=np.float32)
    participants = np.asarray(participants)
    for p in np.unique(participants):
        m = participants == p
        out[m] = subject_normalize(trials[m], mode)
    return out


class AlignStats(Moments):
    """Subject alignment statistics, streamed: the mean and standard deviation of every entry of
    a model's per-trial representation (regions × time steps) over one participant's trials.
    Training (:mod:`fmri_edge.training.fit`) and ``predict`` use this same class, so a participant
    is aligned the same way wherever its trials come from — one file, chunks, or several files."""

    def add(self, rep: np.ndarray) -> None:
        """``rep``: (n, C, T') representations of n trials of the participant."""
        self.merge(AlignStats.of(rep))

    @classmethod
    def of(cls, rep: np.ndarray) -> "AlignStats":
        """The statistics of one chunk of representations (n, C, T') alone."""
        y = np.asarray(rep, dtype=np.float64)
        if not y.shape[0]:
            return cls()
        mean = y.mean(axis=0)
        return cls(y.shape[0], mean, ((y - mean) ** 2).sum(axis=0))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) as float32 arrays of the representation's shape; scale = std + EPS."""
        if not self.n:
            raise ValueError("no trials were added")
        return np.asarray(self.mean, dtype=np.float32), (self.std() + EPS).astype(np.float32)


def align_stats_by_participant(rep: np.ndarray, participants: np.ndarray) -> dict:
    """{participant: (mean, scale)}: each participant's :class:`AlignStats` over its trials in
    ``rep`` (N, C, T')."""
    participants = np.asarray(participants)
    return {p: AlignStats.of(rep[participants == p]).result() for p in np.unique(participants)}
