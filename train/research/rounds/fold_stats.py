"""Summaries shared by the research drivers: pooled and per-fold challenge numbers of a set of
held-out answers, and paired per-fold differences (mean ± standard error over the folds)."""

import numpy as np

from fmri_edge.evaluation import scoring
from fmri_edge.training.protocols import baseline_level


def summary(cls, labels, groups, folds):
    """Pooled accuracy, Score and LEVEL error of CLASS answers ``cls`` (LEVEL by the class-only
    rule) against ``labels`` (N, 2), and accuracy and Score per fold: ``folds`` lists the group
    names, ``groups`` the group of every trial."""

    def score(mask):
        c = cls[mask]
        return scoring.challenge_score(c, labels[mask, 0], baseline_level(c), labels[mask, 1])

    s = score(np.ones(len(cls), bool))
    per = [score(groups == g) for g in folds]
    acc = [1 - f["CLASS_error"] for f in per]
    return dict(
        acc=1 - s["CLASS_error"],
        Score=s["Score"],
        LEVEL_error=s["LEVEL_error"],
        fold_acc=acc,
        fold_Score=[f["Score"] for f in per],
        fold_acc_mean=float(np.mean(acc)),
        fold_acc_std=float(np.std(acc)),
    )


def paired(a, b, lower_is_better=False):
    """a - b per fold: mean, s.e., and in how many folds a is better / worse (for Score, lower is better)."""
    d = np.asarray(a) - np.asarray(b)
    s = -1 if lower_is_better else 1
    return dict(
        mean=float(d.mean()),
        se=float(d.std(ddof=1) / np.sqrt(len(d))),
        better=int((s * d > 0).sum()),
        worse=int((s * d < 0).sum()),
    )


CLS = np.array([-1, 0, 1])


def fitted_probs(make, X, y, train):
    """Class probabilities (columns -1, 0, 1) of every row of ``X`` from ``make()`` fitted on the
    ``train`` rows (a scikit-learn classifier), and how many convergence warnings the fit raised."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = make().fit(X[train], y[train])
    n = sum(issubclass(x.category, ConvergenceWarning) for x in w)
    return clf.predict_proba(X)[:, [list(clf.classes_).index(c) for c in CLS]], n


def group_error(probs, y, groups, g):
    """CLASS error of the argmax answers on the trials of group ``g``."""
    m = groups == g
    return float(np.mean(CLS[probs[m].argmax(1)] != y[m]))


class FitCache:
    """Leave-groups-out fits of scikit-learn classifiers, each fitted once: the class probabilities
    of every trial from a fit of ``make()`` on ``X`` without the ``excluded`` groups, cached by
    (``key``, excluded), and the convergence warnings of all fits."""

    def __init__(self, y, groups):
        self.y, self.groups, self.fits, self.warnings = y, groups, {}, 0

    def probs(self, key, make, X, excluded):
        k = (key, frozenset(excluded))
        if k not in self.fits:
            self.fits[k], n = fitted_probs(make, X, self.y, ~np.isin(self.groups, list(excluded)))
            self.warnings += n
        return self.fits[k]

    def error(self, probs, g):
        return group_error(probs, self.y, self.groups, g)

    def logo(self, key, make, X, left_out, groups):
        """Mean CLASS error over ``groups``, each scored by a fit without it and ``left_out``."""
        return float(
            np.mean([self.error(self.probs(key, make, X, left_out | {g}), g) for g in groups])
        )


def read_answers(csv_path, participants, trial_index):
    """Rows of a submission CSV with probabilities (Participant, Trial, CLASS, LEVEL, p…) in the
    order of the dataset's trials: CLASS (N,) and the probability columns (N, k) (empty if none)."""
    rows = {}
    for line in open(csv_path).read().splitlines()[1:]:
        p, t, c, lv, *pr = line.split(",")
        rows[(p, int(t))] = (int(c), [float(v) for v in pr])
    trial1 = np.asarray(trial_index) + (
        1 if min(trial_index) == 0 else 0
    )  # CSV trials count from 1
    keys = [(p, int(t)) for p, t in zip(participants, trial1)]
    return np.array([rows[k][0] for k in keys]), np.array([rows[k][1] for k in keys])
