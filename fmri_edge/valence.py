"""Valence as fmri-edge answers it: the CLASS values (−1, 0, 1), the LEVEL values (−4 … 4), and
the decision of an answer from the model's probabilities (numpy only).

The LEVEL cost (:func:`level_terms`) is the challenge's LEVEL error per trial; the rule
``min_expected_error`` answers the level with the least expected cost.

Examples
--------
>>> import numpy as np
>>> decide_class(np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])).tolist()
[0, -1]
"""

from __future__ import annotations

import numpy as np

CLASS_VALUES = np.array([-1, 0, 1])
LEVEL_VALUES = np.arange(-4, 5)
LEVEL_RULES = ("argmax", "min_expected_error")  # how a LEVEL is chosen from its probabilities


def level_terms(pred, true) -> np.ndarray:
    """Per-trial |pred − true| / (|pred| + |true|), 0 where both are 0."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    den = np.abs(pred) + np.abs(true)
    return np.divide(np.abs(pred - true), den, out=np.zeros_like(den), where=den > 0)


def expected_level_error(level_probs: np.ndarray) -> np.ndarray:
    """(N, 9) probabilities over LEVEL −4…4 → (N, 9) expected LEVEL_error of answering each level."""
    cost = level_terms(LEVEL_VALUES[:, None], LEVEL_VALUES[None, :])  # cost[answer, truth]
    return np.asarray(level_probs, dtype=float) @ cost.T


def decide_level(level_probs: np.ndarray, rule: str = "argmax") -> np.ndarray:
    """LEVEL answer per trial: the most probable level, or the one with least expected error."""
    if rule == "argmax":
        return LEVEL_VALUES[np.argmax(level_probs, axis=1)]
    if rule == "min_expected_error":
        return LEVEL_VALUES[np.argmin(expected_level_error(level_probs), axis=1)]
    raise ValueError(f"unknown LEVEL rule {rule!r} ({', '.join(LEVEL_RULES)})")


def decide_class(class_probs: np.ndarray) -> np.ndarray:
    """CLASS answer per trial: the most probable class."""
    return CLASS_VALUES[np.argmax(class_probs, axis=1)]
