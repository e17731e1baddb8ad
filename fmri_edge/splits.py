"""Evaluation splits: the paper's random 8:1:1 trial split and subject-independent folds.

Order-mates (subjects who watched the videos in the same order, see the data README) always
stay on the same side of a subject split, or trial position would leak.
"""
from __future__ import annotations

import numpy as np

PROTOCOL_LABEL = {"random": "random 8:1:1 trials (optimistic)", "subject": "cross-subject (honest)"}

ORDER_MATES = {"P01": "P10", "P02": "P11", "P03": "P12", "P04": "P13",
               "P05": "P14", "P06": "P15", "P07": "P16"}


def subject_group(participant: str) -> str:
    """The group a participant belongs to: its order-mate pair, or itself."""
    for a, b in ORDER_MATES.items():
        if participant in (a, b):
            return f"{a}+{b}"
    return participant


def groups_of(participants: list[str]) -> dict[str, list[str]]:
    """{group: its participants}, groups in sorted order."""
    groups: dict[str, list[str]] = {}
    for p in sorted(participants):
        groups.setdefault(subject_group(p), []).append(p)
    return groups


def subject_folds(participants: list[str]) -> list[tuple[list[str], list[str]]]:
    """Leave-one-group-out folds: [(train participants, test participants)], one per group."""
    groups = groups_of(participants)
    folds = []
    for g, test in groups.items():
        train = [p for h, ps in groups.items() if h != g for p in ps]
        folds.append((train, test))
    return folds


def inner_validation(train_participants: list[str], n_groups: int, seed: int) -> tuple[list[str], list[str]]:
    """Hold ``n_groups`` whole groups out of the training participants for validation
    (epoch and checkpoint choice), chosen by ``seed``; returns (fit, validation)."""
    groups = sorted({subject_group(p) for p in train_participants})
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, size=min(n_groups, len(groups) - 1), replace=False).tolist())
    fit = [p for p in train_participants if subject_group(p) not in val_groups]
    val = [p for p in train_participants if subject_group(p) in val_groups]
    return fit, val


def random_split(strata: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> tuple[np.ndarray, ...]:
    """Stratified random split of trial indices into train / validation / test (paper protocol)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for value in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == value))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)
