"""Evaluation protocols over the labeled ICBHI subjects, and the final fit on all of them.

- ``random``: the paper's protocol, a stratified random 8:1:1 split of *trials* (same subjects
  on both sides: optimistic), repeated over seeds.
- ``subject``: leave-one-order-mate-group-out cross-validation (9 folds); inside each fold one
  more group of the training subjects is held out as validation for the checkpoint choice, so
  the held-out fold is never looked at until it is scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fmri_edge import scoring, splits
from fmri_edge.normalize import normalize_by_participant
from fmri_edge.training.fit import FitResult, decide, fit, predict_proba
from fmri_edge.training.recipe import Recipe

Progress = Callable[[str, int, int], None]  # (stage, epoch, epochs)


@dataclass
class Dataset:
    trials: np.ndarray        # (N, 246, T) float32 raw BOLD
    labels: np.ndarray        # (N, 2) [CLASS, LEVEL]
    participants: np.ndarray  # (N,) participant id per trial
    trial_index: np.ndarray   # (N,) 1-based trial number within its participant

    def take(self, mask) -> "Dataset":
        return Dataset(self.trials[mask], self.labels[mask], self.participants[mask], self.trial_index[mask])

    def of(self, participants: list[str]) -> "Dataset":
        return self.take(np.isin(self.participants, participants))


def dataset_from_icbhi(subjects: dict[str, tuple[np.ndarray, np.ndarray]]) -> Dataset:
    names = sorted(subjects)
    return Dataset(
        trials=np.concatenate([subjects[p][0] for p in names]),
        labels=np.concatenate([subjects[p][1] for p in names]),
        participants=np.concatenate([[p] * len(subjects[p][0]) for p in names]),
        trial_index=np.concatenate([np.arange(1, len(subjects[p][0]) + 1) for p in names]),
    )


def normalize_subjects(ds: Dataset, mode: str | None) -> Dataset:
    """Subject-wise normalization per participant (:mod:`fmri_edge.normalize`); a no-op for "none"."""
    if (mode or "none") == "none":
        return ds
    return Dataset(normalize_by_participant(ds.trials, ds.participants, mode), ds.labels,
                   ds.participants, ds.trial_index)


def prepare(recipe: Recipe, ds: Dataset) -> Dataset:
    """The dataset as the recipe's model receives it (subject-wise normalization, if any)."""
    return normalize_subjects(ds, recipe.model.subject_norm)


@dataclass
class FoldResult:
    name: str
    test: Dataset
    probs: dict
    fit: FitResult
    metrics: dict = field(default_factory=dict)


def evaluate(recipe: Recipe, probs: dict, labels: np.ndarray) -> dict:
    """Paper metrics and challenge score for whatever heads the model has. A class-only model
    answers LEVEL with the class-only baseline (−1 → −3, 0 → 0, 1 → 2)."""
    d = decide(probs, recipe.eval.level_rule)
    cls = d.get("class")
    lvl = d.get("level")
    if cls is None:  # level-only model: its class is the sign of its level
        cls = np.sign(lvl)
    if lvl is None:
        lvl = baseline_level(cls)
    return scoring.full_report(cls, labels[:, 0], lvl, labels[:, 1])


def baseline_level(valence_class: np.ndarray) -> np.ndarray:
    """The class-only LEVEL baseline: −1 → −3, 0 → 0, 1 → 2."""
    return np.select([valence_class < 0, valence_class > 0], [-3, 2], 0)


def _fit_fold(recipe, name, fit_ds, val_ds, test_ds, progress, seed) -> FoldResult:
    cb = (lambda e, row: progress(name, e, recipe.optim.epochs)) if progress else None
    res = fit(recipe, fit_ds.trials, fit_ds.labels, val_ds.trials, val_ds.labels, seed=seed, on_epoch=cb)
    probs = predict_proba(res.model, test_ds.trials)
    return FoldResult(name, test_ds, probs, res, evaluate(recipe, probs, test_ds.labels))


def run_subject_cv(recipe: Recipe, ds: Dataset, progress: Progress | None = None) -> list[FoldResult]:
    ds = prepare(recipe, ds)
    folds = []
    for k, (train_p, test_p) in enumerate(splits.subject_folds(sorted(set(ds.participants)))):
        fit_p, val_p = splits.inner_validation(train_p, recipe.eval.inner_val_groups, seed=recipe.seed + k)
        name = "test " + "+".join(test_p)
        folds.append(_fit_fold(recipe, name, ds.of(fit_p), ds.of(val_p), ds.of(test_p), progress, recipe.seed + k))
    return folds


def run_random_splits(recipe: Recipe, ds: Dataset, progress: Progress | None = None) -> list[FoldResult]:
    ds = prepare(recipe, ds)
    out = []
    for seed in recipe.eval.seeds:
        tr, va, te = splits.random_split(ds.labels[:, 0], seed)
        out.append(_fit_fold(recipe, f"seed {seed}", ds.take(tr), ds.take(va), ds.take(te), progress, seed))
    return out


def pooled(recipe: Recipe, folds: list[FoldResult]) -> dict:
    """Metrics over all held-out predictions together, plus the per-fold spread."""
    labels = np.concatenate([f.test.labels for f in folds])
    probs = {t: np.concatenate([f.probs[t] for f in folds]) for t in folds[0].probs}
    summary = evaluate(recipe, probs, labels)
    for key in ("Score", "CLASS_error", "LEVEL_error"):
        v = [f.metrics[key] for f in folds]
        summary[f"{key}_folds_mean"], summary[f"{key}_folds_std"] = float(np.mean(v)), float(np.std(v))
    for task in ("CLASS", "LEVEL"):
        for m in ("accuracy", "precision", "sensitivity", "f1"):
            v = [f.metrics[task][m] for f in folds]
            summary[task][f"{m}_folds_mean"], summary[task][f"{m}_folds_std"] = float(np.mean(v)), float(np.std(v))
    summary["best_epochs"] = [f.fit.best_epoch for f in folds]
    vm = [f.fit.val_metric for f in folds if f.fit.val_metric is not None]
    summary["inner_val_metric_mean"] = float(np.mean(vm)) if vm else None
    return summary


def fit_all(recipe: Recipe, ds: Dataset, epochs: int, progress: Progress | None = None) -> FitResult:
    """The shipped model: all labeled subjects, a fixed number of epochs chosen beforehand by CV."""
    cb = (lambda e, row: progress("all subjects", e, epochs)) if progress else None
    ds = prepare(recipe, ds)
    return fit(recipe, ds.trials, ds.labels, epochs=epochs, on_epoch=cb)
