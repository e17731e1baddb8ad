"""What a lab needs to believe a cross-validated accuracy: chance, an interval, a permutation null.

- chance: the binomial threshold (Combrisson & Jerbi 2015) — the accuracy a decoder guessing at
  the test trials' largest class share would exceed with probability at most α = 0.05 — for the
  number of held-out trials;
- a 95 % interval from a participant bootstrap (participants resampled with replacement, their
  held-out trials pooled): the spread across folds underestimates the error (Varoquaux 2018);
- with ``permutations`` N, a permutation null: the labels shuffled within each participant and the
  whole CV rerun on each shuffle, alignment statistics and fits included (Valente et al. 2021;
  scikit-learn's ``permutation_test_score(groups=…)`` semantics), p = (C + 1) / (N + 1);
- per-fold and per-participant tables.

The number estimates how the model decodes **new participants of this study**: same stimuli,
scanner and protocol. It says nothing about new stimuli, other scanners or other protocols.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from fmri_edge.evaluation import scoring
from fmri_edge.training.fit import decide

ALPHA = 0.05
N_BOOTSTRAP = 2000
SENTENCE = (
    "This estimates how well the model decodes the valence CLASS of new participants of this study "
    "(the same stimuli, scanner and protocol); it is not an estimate for new stimuli, other scanners "
    "or other protocols."
)


def binomial_threshold(n: int, p0: float, alpha: float = ALPHA) -> float:
    """The smallest accuracy k/n with P(X ≥ k) ≤ alpha for X ~ Binomial(n, p0)
    (scipy: ``(binom.isf(alpha, n, p0) + 1) / n``), computed exactly in log space."""
    if n <= 0:
        return float("nan")
    logp, logq = math.log(p0), math.log1p(-p0)
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * logp + (n - k) * logq
        for k in range(n + 1)
    ]
    tail = 0.0
    for k in range(n, -1, -1):
        tail += math.exp(log_pmf[k])
        if tail > alpha:
            return (k + 1) / n
    return 0.0


def participant_bootstrap(
    correct: np.ndarray, participants: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of the pooled accuracy over participants drawn with replacement."""
    names, idx = np.unique(participants, return_inverse=True)
    hits = np.bincount(idx, weights=correct.astype(np.float64), minlength=len(names))
    counts = np.bincount(idx, minlength=len(names)).astype(np.float64)
    draw = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    acc = hits[draw].sum(axis=1) / counts[draw].sum(axis=1)
    lo, hi = np.percentile(acc, [2.5, 97.5])
    return float(lo), float(hi)


def shuffle_within(
    labels: np.ndarray, participants: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The label rows permuted within each participant (each keeps its own class counts)."""
    out = labels.copy()
    for p in np.unique(participants):
        at = np.flatnonzero(participants == p)
        out[at] = labels[rng.permutation(at)]
    return out


def predicted_class(probs: dict, level_rule: str) -> np.ndarray:
    d = decide(probs, level_rule)
    return d["class"] if "class" in d else np.sign(d["level"])


def held_out(folds, level_rule: str) -> dict[str, np.ndarray]:
    """Every held-out trial of a CV: participant, trial, fold, true and predicted CLASS, LEVEL."""
    cols: dict[str, list] = {
        k: [] for k in ("participant", "trial", "fold", "true", "pred", "level", "rated")
    }
    for f in folds:
        cols["participant"].append(f.test.participants)
        cols["trial"].append(f.test.trial_index)
        cols["fold"].append(np.full(len(f.test.labels), f.name, dtype=object))
        cols["true"].append(f.test.labels[:, 0])
        cols["pred"].append(predicted_class(f.probs, level_rule))
        cols["level"].append(f.test.labels[:, 1])
        cols["rated"].append(
            np.ones(len(f.test.labels), dtype=bool)
            if f.test.level_rated is None
            else f.test.level_rated
        )
    return {k: np.concatenate(v) for k, v in cols.items()}


def accuracy_of(folds, level_rule: str) -> float:
    h = held_out(folds, level_rule)
    return float(np.mean(h["true"] == h["pred"]))


def _counts(values: np.ndarray) -> dict:
    return {("CLASS " + (f"{c:+d}" if c else "0")): int((values == c).sum()) for c in (-1, 0, 1)}


def fold_table(folds, groups: dict | None, level_rule: str) -> list[dict]:
    rows = []
    for f in folds:
        pred = predicted_class(f.probs, level_rule)
        people = sorted(set(f.test.participants.tolist()))
        rows.append(
            {
                "fold": f.name,
                "participants": "+".join(people),
                "group": "+".join(sorted({groups[p] for p in people})) if groups else "",
                "trials": int(len(pred)),
                "CLASS_accuracy": round(float(np.mean(pred == f.test.labels[:, 0])), 4),
                **_counts(f.test.labels[:, 0]),
            }
        )
    return rows


def participant_table(folds, groups: dict | None, level_rule: str) -> list[dict]:
    h = held_out(folds, level_rule)
    rows = []
    for p in sorted(set(h["participant"].tolist())):
        m = h["participant"] == p
        rows.append(
            {
                "participant": p,
                "group": groups[p] if groups else "",
                "fold": h["fold"][m][0],
                "trials": int(m.sum()),
                "CLASS_accuracy": round(float(np.mean(h["true"][m] == h["pred"][m])), 4),
                **_counts(h["true"][m]),
            }
        )
    return rows


def permutation_null(
    run_cv: Callable[[np.ndarray], list],
    labels: np.ndarray,
    participants: np.ndarray,
    n: int,
    level_rule: str,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[float]:
    """The CV accuracy on ``n`` label shuffles (within participants), each a whole rerun of
    ``run_cv(labels)`` → folds."""
    rng = np.random.default_rng(seed)
    null = []
    for i in range(n):
        null.append(accuracy_of(run_cv(shuffle_within(labels, participants, rng)), level_rule))
        if progress:
            progress("permutation null (labels shuffled within participants)", i + 1, n)
    return null


def summarize(folds, level_rule: str, null: list[float] | None = None, seed: int = 0) -> dict:
    """The headline of a subject CV: CLASS accuracy with its participant-bootstrap interval, the
    binomial chance threshold, the permutation p-value (with a null), LEVEL on rated trials."""
    h = held_out(folds, level_rule)
    correct = h["true"] == h["pred"]
    n, acc = len(correct), float(np.mean(correct))
    shares = [float(np.mean(h["true"] == c)) for c in (-1, 0, 1)]
    p0 = max(max(shares), 1 / 3)
    lo, hi = participant_bootstrap(correct, h["participant"], seed=seed)
    out = {
        "metric": "CLASS accuracy",
        "estimate": round(acc, 4),
        "interval_95": [round(lo, 4), round(hi, 4)],
        "interval_method": f"participant bootstrap ({N_BOOTSTRAP} resamples of {len(set(h['participant']))} "
        "participants)",
        "n_trials": n,
        "n_participants": len(set(h["participant"].tolist())),
        "n_folds": len(folds),
        "chance": {
            "level": round(p0, 4),
            "binomial_threshold": round(binomial_threshold(n, p0), 4),
            "alpha": ALPHA,
            "meaning": f"a guesser at the largest class share ({p0:.3f}) exceeds this "
            f"accuracy on {n} trials with probability ≤ {ALPHA}",
        },
        "permutation": None,
        "estimates": SENTENCE,
    }
    if null:
        c = int(np.sum(np.asarray(null) >= acc))
        out["permutation"] = {
            "n": len(null),
            "p": round((c + 1) / (len(null) + 1), 4),
            "null_mean": round(float(np.mean(null)), 4),
            "null_95th": round(float(np.percentile(null, 95)), 4),
            "method": "labels shuffled within each participant, whole CV rerun",
        }
    out["level"] = level_summary(folds, level_rule, h["rated"])
    return out


def level_summary(folds, level_rule: str, rated: np.ndarray) -> dict:
    """LEVEL_error and Score over the held-out trials whose LEVEL is a rating."""
    if not rated.any():
        return {
            "rated_trials": 0,
            "note": "no ratings: LEVEL is not evaluated (the model's LEVEL answer is the "
            "class-only rule −1 → −3, 0 → 0, 1 → 2)",
        }
    from fmri_edge.training.protocols import baseline_level

    cls, lvl, true_c, true_l = [], [], [], []
    for f in folds:
        d = decide(f.probs, level_rule)
        c = d["class"] if "class" in d else np.sign(d["level"])
        cls.append(c), lvl.append(d.get("level", baseline_level(c)))
        true_c.append(f.test.labels[:, 0]), true_l.append(f.test.labels[:, 1])
    cls, lvl, true_c, true_l = (np.concatenate(v)[rated] for v in (cls, lvl, true_c, true_l))
    return {"rated_trials": int(rated.sum()), **scoring.challenge_score(cls, true_c, lvl, true_l)}


def shuffles(
    labels: np.ndarray, participants: np.ndarray, n: int, seed: int = 0
) -> list[np.ndarray]:
    """The ``n`` label shuffles :func:`permutation_null` draws, in its order (the same generator from
    ``seed``): made once on the client, so each permutation task of a cluster run gets the same
    labels as the local run whichever worker runs it."""
    rng = np.random.default_rng(seed)
    return [shuffle_within(labels, participants, rng) for _ in range(n)]
