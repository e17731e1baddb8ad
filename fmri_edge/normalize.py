"""Subject-wise normalization (numpy only): each region scaled by statistics of the same
participant's trials — all its trials and seconds together, no labels — so it is fair at test time
as long as all trials of a participant are normalized together.

Applied outside the network, per participant, before the model's in-graph per-trial normalization.
"""
from __future__ import annotations

import numpy as np

SUBJECT_NORMS = ("none", "zscore", "center")
EPS = 1e-6


def subject_normalize(trials: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """(N, regions, T) trials of ONE participant → same shape, float32.

    - ``zscore``: per region, minus its mean and divided by its std over all N·T samples;
    - ``center``: per region, minus its mean over all N·T samples;
    - ``none``: unchanged.
    """
    if mode not in SUBJECT_NORMS:
        raise ValueError(f"unknown subject normalization {mode!r}; choose from {SUBJECT_NORMS}")
    x = np.asarray(trials, dtype=np.float64)
    if mode == "none":
        return x.astype(np.float32)
    mu = x.mean(axis=(0, 2), keepdims=True)
    x = x - mu
    if mode == "zscore":
        x = x / (x.std(axis=(0, 2), keepdims=True) + EPS)
    return x.astype(np.float32)


def normalize_by_participant(trials: np.ndarray, participants: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """Apply :func:`subject_normalize` to each participant's trials separately."""
    out = np.empty(trials.shape, dtype=np.float32)
    participants = np.asarray(participants)
    for p in np.unique(participants):
        m = participants == p
        out[m] = subject_normalize(trials[m], mode)
    return out
